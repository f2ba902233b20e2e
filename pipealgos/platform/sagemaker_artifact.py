"""SageMaker model folders and archives: recognised, read as a pipealgos model, and written.

A folder is a *SageMaker model folder* when it holds no ``manifest.json`` but a
``model_algo-1`` file (what SageMaker leaves in ``/opt/ml/model`` after unpacking a built-in's
``model.tar.gz``). Its ``model_algo-*`` files are read (k-means' ``state_<uuid>`` and anything
else are not model arrays and are ignored), and the algorithm is:

1. the one named (``--algorithm``, else ``PIPEALGOS_ALGORITHM``), whose layout the files must have;
2. else the one registered algorithm whose :class:`~.sagemaker_format.SageMakerFormat`
   recognises the files; none, or several, is an error asking for the name.

The result is a :class:`~.model_store.StoredModel` like one read from our own manifest, so
everything downstream (``serve``, ``inspect``, ``import-model``) is the same code.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

from pipealgos.io import DataError
from pipealgos.io.mxnet_module import MODEL_FILE

from .config import ConfigError
from .model_store import MANIFEST, StoredModel
from .registry import ALGORITHMS, AlgorithmSpec, get_algorithm
from .sagemaker_format import ModelFiles, SageMakerModelError

FORMAT = "sagemaker"
MODEL_FORMAT_ENV = "PIPEALGOS_MODEL_FORMAT"
MODEL_FILE_PREFIX = "model_algo-"


def is_sagemaker_model_dir(folder: Path) -> bool:
    return not (folder / MANIFEST).exists() and (folder / MODEL_FILE).is_file()


def read_model_files(folder: Path) -> ModelFiles:
    """The ``model_algo-*`` files at the top of ``folder``, by name."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())
            if path.name.startswith(MODEL_FILE_PREFIX) and path.is_file()}


def load_sagemaker_model(folder: Path, algorithm: str | None = None, source: Path | None = None) -> StoredModel:
    """The SageMaker model in ``folder`` (see the module doc for how the algorithm is chosen).
    Errors name ``source`` (the archive ``folder`` was extracted from), else ``folder``."""
    files = read_model_files(folder)
    source = source or folder
    spec = choose_algorithm(files, algorithm or os.environ.get("PIPEALGOS_ALGORITHM"), source)
    try:
        arrays, hyperparameters = spec.sagemaker_format.load(files)
        feature_dim = int(spec.model_type.from_arrays(arrays, hyperparameters).feature_dim)
    except (DataError, ValueError, KeyError) as exc:  # from_arrays refuses arrays that do not fit together
        raise SageMakerModelError(f"{source}: {exc} (read as a SageMaker {spec.name} model)") from None
    described = {"format": FORMAT, "algorithm": spec.name, "files": sorted(files)}
    return StoredModel(spec.name, hyperparameters, arrays, described, hyperparameters, feature_dim)


def choose_algorithm(files: ModelFiles, named: str | None, source: Path) -> AlgorithmSpec:
    if named:
        spec = get_algorithm(named)
        if spec.sagemaker_format is None:
            raise SageMakerModelError(f"{source} holds a SageMaker model, and {spec.name}'s SageMaker format is not "
                                      f"known to pipealgos (known: {', '.join(known_formats())})")
        return spec
    matches = [spec for spec in ALGORITHMS.values()
               if spec.sagemaker_format is not None and spec.sagemaker_format.recognises(files)]
    if len(matches) == 1:
        return matches[0]
    found = "fits several algorithms' layouts (" + ", ".join(s.name for s in matches) + ")" if matches else \
        f"has no layout pipealgos recognises (known: {', '.join(known_formats())})"
    raise SageMakerModelError(f"{source}: its {MODEL_FILE} {found}; name the algorithm with --algorithm or "
                              "PIPEALGOS_ALGORITHM")


def known_formats() -> list[str]:
    return sorted(spec.name for spec in ALGORITHMS.values() if spec.sagemaker_format is not None)


def export_files(stored: StoredModel) -> ModelFiles:
    """Our model as the files of SageMaker's ``model.tar.gz``."""
    spec = get_algorithm(stored.algorithm)
    if spec.sagemaker_format is None:
        raise SageMakerModelError(f"{spec.name} has no known SageMaker model format; pipealgos writes one for "
                                  f"{', '.join(known_formats())}")
    return spec.sagemaker_format.export(stored.arrays, stored.resolved_hyperparameters)


def sagemaker_format_requested(spec: AlgorithmSpec) -> bool:
    """Whether ``train`` also writes SageMaker's files into ``model/``: ``PIPEALGOS_MODEL_FORMAT``
    is ``sagemaker`` (an environment variable, not a hyperparameter: SageMaker's own containers
    would refuse an unknown hyperparameter). Checked before training, so a bad value or an
    algorithm without a known format fails the job at once."""
    value = os.environ.get(MODEL_FORMAT_ENV, "").strip().lower()
    if value in ("", "pipealgos"):
        return False
    if value != FORMAT:
        raise ConfigError(f"{MODEL_FORMAT_ENV}={value!r} is not a model format: set it to 'sagemaker' to also write "
                          "SageMaker's model_algo-1, or unset it")
    if spec.sagemaker_format is None:
        raise ConfigError(f"{MODEL_FORMAT_ENV}=sagemaker: {spec.name}'s SageMaker model format is not known to "
                          f"pipealgos (known: {', '.join(known_formats())}); unset it for this job")
    return True


def write_tar_gz(files: ModelFiles, destination: Path) -> None:
    """``files`` as a ``model.tar.gz`` (members at the top level, as SageMaker packs ``model/``),
    written to a temporary file beside ``destination`` and renamed: never half a file."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".export-", suffix=".tar.gz", dir=destination.parent)
    try:
        with os.fdopen(handle, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name, payload in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(payload), 0o644
                tar.addfile(info, io.BytesIO(payload))
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
