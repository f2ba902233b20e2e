"""Finding, unpacking and loading the model a server answers with.

SageMaker extracts ``ModelDataUrl`` into ``/opt/ml/model`` before ``serve`` starts, so the
folder normally holds ``manifest.json`` and the arrays. When it holds a ``model.tar.gz``
instead (a model copied in by hand, or the training job's archive), the archive is
extracted into a private temporary folder — the model folder may be a read-only mount — with
every member checked first (tarfile's ``data`` filter, no links, at most
``PIPEALGOS_MODEL_MAX_EXTRACTED_MB`` in all). The arrays are read into memory and the
temporary folder removed.

The algorithm comes from the model's own manifest, so one image serves any pipealgos model.
A folder (or archive) holding SageMaker's own ``model_algo-1`` and no manifest is a model
trained by SageMaker's built-in container: it is read by
:mod:`pipealgos.platform.sagemaker_artifact`, the algorithm named by ``PIPEALGOS_ALGORITHM``
or found from the file's layout.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipealgos.io import DataError
from pipealgos.io.minibatch import Features
from pipealgos.io.mxnet_module import MODEL_FILE
from pipealgos.platform.model_store import MANIFEST, ModelFormatError, StoredModel, load_model
from pipealgos.platform.registry import AlgorithmSpec, get_algorithm
from pipealgos.platform.sagemaker_artifact import is_sagemaker_model_dir, load_sagemaker_model

from .formats import BadRequest
from .settings import max_extracted_model_bytes

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
        ``predicted_label``), an undeclared one is a bug. A :class:`DataError` the model raises
        about the records is the client's: a 400 naming the record."""
        try:
            result = self.model.predict(features)
        except DataError as exc:
            raise BadRequest(str(exc)) from None
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


def load_served_model(model_dir: Path, algorithm: str | None = None) -> ServedModel:
    """Load the model in ``model_dir`` (extracting ``model.tar.gz`` when there is no manifest).
    ``algorithm`` names the algorithm of a SageMaker model (default: ``PIPEALGOS_ALGORITHM``,
    else found from its layout); our own models name theirs."""
    stored = load_stored_model(Path(model_dir), algorithm)
    spec = get_algorithm(stored.algorithm)
    model = spec.model_type.from_arrays(stored.arrays, stored.resolved_hyperparameters)
    return ServedModel(spec, model)


def load_stored_model(path: Path, algorithm: str | None = None) -> StoredModel:
    """The model at ``path``: a folder holding ours (``manifest.json``) or SageMaker's
    (``model_algo-1``), either of them packed as ``model.tar.gz`` in the folder, or the path of
    such an archive itself."""
    if path.is_file():
        return _load_archive(path, algorithm)
    if is_sagemaker_model_dir(path):
        return load_sagemaker_model(path, algorithm)
    if (path / MANIFEST).exists() or not (path / ARCHIVE).exists():
        return load_model(path)
    return _load_archive(path / ARCHIVE, algorithm)


def _load_archive(archive: Path, algorithm: str | None) -> StoredModel:
    scratch = Path(tempfile.mkdtemp(prefix="pipealgos-model-"))
    try:
        extract_archive(archive, scratch, max_extracted_model_bytes())
        folder = _model_folder(scratch, archive)
        if (folder / MANIFEST).exists():
            return load_model(folder)
        return load_sagemaker_model(folder, algorithm, source=archive)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _model_folder(root: Path, archive: Path) -> Path:
    """The archive's top level, or its single top-level folder, must hold the manifest (ours) or
    ``model_algo-1`` (SageMaker's)."""
    def holds_model(folder: Path) -> bool:
        return (folder / MANIFEST).exists() or (folder / MODEL_FILE).is_file()

    if holds_model(root):
        return root
    entries = list(root.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and holds_model(entries[0]):
        return entries[0]
    raise ModelFormatError(f"{archive} holds no {MANIFEST} at its top level, nor SageMaker's {MODEL_FILE}: not a "
                           "model archive (create it with `tar -czf model.tar.gz -C model .`)")


def extract_archive(archive: Path, destination: Path, max_bytes: int) -> None:
    """Extract a ``.tar.gz`` into ``destination`` after checking every member, before any is written.

    Each member must pass tarfile's ``data`` filter (paths stay inside ``destination``, leading
    slashes are stripped, devices and FIFOs are refused, permission bits data has no use for
    are cleared) and must not be a link: links are refused outright, a model needs none. The
    members' sizes may add up to at most ``max_bytes``
    (``PIPEALGOS_MODEL_MAX_EXTRACTED_MB``); the sizes are summed as the headers are read, so a
    small archive of one huge file of zeros is refused without inflating it.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members, total = [], 0
            for member in tar:  # reads headers one by one: stops at the first member over the cap
                _check_member(member, archive, destination)
                total += member.size
                if total > max_bytes:
                    raise ModelFormatError(
                        f"{archive} would extract to more than {max_bytes} bytes (member '{member.name}' brings it "
                        f"to {total}): raise PIPEALGOS_MODEL_MAX_EXTRACTED_MB if the model really is that large")
                members.append(member)
            tar.extractall(destination, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise UnsafeArchiveError(f"{archive}: unsafe member refused ({exc}); model archives hold only files and "
                                 "folders inside the archive") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ModelFormatError(f"{archive} is not a readable .tar.gz ({exc})") from None


def _check_member(member: tarfile.TarInfo, archive: Path, destination: Path) -> None:
    """Refuses links (which the data filter would allow inside the folder), then applies the
    data filter itself, so a bad member is refused before anything is extracted."""
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"{archive}: member '{member.name}' is a link (to '{member.linkname}'); "
                                 "model archives may hold only files and folders")
    tarfile.data_filter(member, str(destination))
