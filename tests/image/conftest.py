"""Tests of the built container image; `make test-image` builds it and sets PIPEALGOS_IMAGE.

Without PIPEALGOS_IMAGE (plain `make test`) every test here is skipped. With it, the image must
hold everything the Dockerfile puts there: every algorithm registered in this tree and
`pipealgos.serve` (a missing one fails, see ``test_image_registers_every_algorithm``).
"""

from __future__ import annotations

import os

import pytest
from image_helpers import Containers, image_python

IMAGE = os.environ.get("PIPEALGOS_IMAGE", "")
if IMAGE:  # podman needs runc and explicit ulimits on these machines (see ci/image/containers.conf)
    os.environ.setdefault("CONTAINERS_CONF", os.path.join(os.path.dirname(__file__), "..", "..", "ci", "image",
                                                          "containers.conf"))


def pytest_collection_modifyitems(config, items):
    if IMAGE:
        return
    skip = pytest.mark.skip(reason="container image tests: run `make test-image` (sets PIPEALGOS_IMAGE)")
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here + os.sep):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def image() -> str:
    return IMAGE


@pytest.fixture(scope="session")
def image_algorithms(image) -> set[str]:
    return set(image_python(image, "from pipealgos.platform.registry import ALGORITHMS; print(*ALGORITHMS)").split())


@pytest.fixture(scope="session")
def image_has_serve(image) -> bool:
    return image_python(image, "import importlib.util as u; print(u.find_spec('pipealgos.serve') is not None)") == "True"


@pytest.fixture
def containers(image):
    started = Containers(image)
    yield started
    started.remove_all()


