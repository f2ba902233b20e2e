"""Driving the built image with podman, as SageMaker drives it with docker.

Every container is started detached under a name we choose, so a test can always remove what it
started (by id) however it ends; `Containers` keeps that list.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from pipealgos.platform.runner.hosts import free_port

PODMAN_TIMEOUT_S = 120


def podman(*args: str, timeout: float = PODMAN_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


class Containers:
    """Starts containers of one image and removes each of them (by id) at `remove_all`."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.ids: list[str] = []

    def start(self, command: list[str], ml_root: Path | None = None, env: dict[str, str] | None = None,
              ports: dict[int, int] | None = None, volumes: dict[Path, str] | None = None) -> str:
        """``podman run -d``; ``ports`` maps a loopback host port to a container port."""
        args = ["run", "-d", "--name", f"pipealgos-test-{uuid.uuid4().hex[:10]}"]
        if ml_root is not None:
            args += ["-v", f"{ml_root}:/opt/ml"]
        for host_dir, container_dir in (volumes or {}).items():
            args += ["-v", f"{host_dir}:{container_dir}"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        for host_port, container_port in (ports or {}).items():
            args += ["-p", f"127.0.0.1:{host_port}:{container_port}"]
        container = podman(*args, self.image, *command).stdout.strip()
        self.ids.append(container)
        return container

    def run(self, command: list[str], ml_root: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> tuple[int, str]:
        """Runs to completion: (exit code, logs)."""
        container = self.start(command, ml_root, env)
        code = wait(container, timeout)
        return code, logs(container)

    def remove_all(self) -> None:
        for container in self.ids:
            podman("rm", "-f", "-t", "0", container, check=False)
        self.ids.clear()


def wait(container: str, timeout: float) -> int:
    return int(podman("wait", container, timeout=timeout).stdout.strip())


def logs(container: str) -> str:
    result = podman("logs", container, check=False)
    return result.stdout + result.stderr


def inspect(container: str) -> dict:
    return json.loads(podman("inspect", container).stdout)[0]


def wait_for_log(container: str, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = logs(container)
        if needle in text:
            return text
        if not inspect(container)["State"]["Running"]:
            raise AssertionError(f"container exited before logging {needle!r}:\n{text}")
        time.sleep(0.3)
    raise AssertionError(f"no {needle!r} in the log within {timeout} s:\n{logs(container)}")


def wait_for_ping(url: str, container: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if not inspect(container)["State"]["Running"]:
            raise AssertionError(f"server container exited:\n{logs(container)}")
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s:\n{logs(container)}")


def image_python(image: str, code: str) -> str:
    """Runs ``python3 -c code`` inside the image (for facts about what was built into it)."""
    return podman("run", "--rm", "--entrypoint", "python3", image, "-c", code).stdout.strip()


def require_algorithm(image_algorithms: set[str], name: str) -> None:
    """The Dockerfile installs the whole package: an algorithm of this tree missing from the
    image is a broken image, not a reason to skip."""
    if name not in image_algorithms:
        pytest.fail(f"'{name}' is not registered in the image; registered there: {sorted(image_algorithms)}")


def require_serve(image_has_serve: bool) -> None:
    if not image_has_serve:
        pytest.fail("the image has no pipealgos.serve package, though the Dockerfile installs the whole package")
