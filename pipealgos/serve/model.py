"""Finding, unpacking and loading the model a server answers with.

SageMaker extracts ``ModelDataUrl`` into ``/opt/ml/model`` before ``serve`` starts, so the
folder normally holds ``manifest.json`` and the arrays. When it holds a ``model.tar.gz``
instead (a model copied in by hand, or the training job's archive), the archive is
extracted into a private temporary folder — the model folder may be a read-only mount — with
every member checked first: no absolute paths, no ``..``, no links, no devices. The arrays are
read into memory and the temporary folder removed.

The algorithm comes from the model's own manifest, so one image serves any pipealgos model.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pipealgos.io.minibatch import Features
from pipealgos.platform.model_store import MANIFEST, ModelFormatError, StoredModel, load_model
from pipealgos.platform.registry import AlgorithmSpec, get_algorithm

ARCHIVE = "model.tar.gz"


class UnsafeArchiveError(ModelFormatError):
    """A model archive member would land outside the extraction folder."""


@dataclass
class ServedModel:
    """A loaded model plus what the server needs to know about its inputs and outputs."""

    spec: AlgorithmSpec
    model: Any

    @property
    def response_key(self) -> str:
        return self.spec.response_key

    @property
    def feature_dim(self) -> int:
        """The input width the model takes (every request record must have it)."""
        return int(self.model.feature_dim)

    @property
    def request_types(self) -> tuple[str, ...]:
        return self.spec.request_types

    def predict(self, features: Features) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
        """One model call for all rows. Returns the outputs and their keys in the registry's
        order; a declared output may be absent (a linear-learner regressor has no
        ``predicted_label``), an undeclared one is a bug."""
        result = self.model.predict(features)
        n = features.shape[0]
        keys = tuple(key for key in self.spec.outputs if key in result)
        extra = sorted(set(result) - set(self.spec.outputs))
        if not keys or extra:
            raise RuntimeError(f"{self.spec.name} model.predict returned {sorted(result)}, "
                               f"expected some of {list(self.spec.outputs)}")
        for key in keys:
            array = np.asarray(result[key])
            if array.ndim not in (1, 2) or array.shape[0] != n:
                raise RuntimeError(f"{self.spec.name} output '{key}' has shape {array.shape}, expected ({n},) or ({n}, k)")
        return result, keys


def load_served_model(model_dir: Path) -> ServedModel:
    """Load the model in ``model_dir`` (extracting ``model.tar.gz`` when there is no manifest)."""
    model_dir = Path(model_dir)
    stored = _load_stored(model_dir)
    spec = get_algorithm(stored.algorithm)
    model = spec.model_type.from_arrays(stored.arrays, stored.resolved_hyperparameters)
    return ServedModel(spec, model)


def _load_stored(model_dir: Path) -> StoredModel:
    if (model_dir / MANIFEST).exists() or not (model_dir / ARCHIVE).exists():
        return load_model(model_dir)
    scratch = Path(tempfile.mkdtemp(prefix="pipealgos-model-"))
    try:
        extract_archive(model_dir / ARCHIVE, scratch)
        return load_model(_manifest_folder(scratch, model_dir / ARCHIVE))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _manifest_folder(root: Path, archive: Path) -> Path:
    """The archive's top level, or its single top-level folder, must hold the manifest."""
    if (root / MANIFEST).exists():
        return root
    entries = list(root.iterdir())
    if len(entries) == 1 and (entries[0] / MANIFEST).exists():
        return entries[0]
    raise ModelFormatError(f"{archive} holds no {MANIFEST} at its top level: not a pipealgos model archive "
                           "(create it with `tar -czf model.tar.gz -C model .`)")


def extract_archive(archive: Path, destination: Path) -> None:
    """Extract a ``.tar.gz`` into ``destination`` after checking every member.

    Only regular files and folders with relative paths free of ``..`` are allowed; links,
    devices and FIFOs are refused outright (a model needs none). tarfile's ``data`` filter
    then applies its own checks and strips permissions bits that do not belong in data.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive)
            tar.extractall(destination, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise UnsafeArchiveError(f"{archive}: unsafe member refused ({exc})") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ModelFormatError(f"{archive} is not a readable .tar.gz ({exc})") from None


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member '{name}' has an absolute path; model archives must use relative paths")
    if ".." in path.parts or ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise UnsafeArchiveError(f"{archive}: member '{name}' contains '..'; refusing to write outside the model folder")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"{archive}: member '{name}' is a link (to '{member.linkname}'); "
                                 "model archives may hold only files and folders")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{archive}: member '{name}' is not a regular file or folder")
