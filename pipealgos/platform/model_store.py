"""The model artifact: named arrays in ``model_algo-1.npz`` plus ``manifest.json``. No pickle.

``manifest.json`` = ``{"format": "pipealgos-model", "format_version": 2, "algorithm": "pca",
"hyperparameters": {...typed values, "auto" where the user left it...},
"resolved_hyperparameters": {...the same with every "auto" replaced by the value training used...},
"feature_dim": 50, "arrays_file": "model_algo-1.npz",
"arrays": {"v": {"shape": [50, 3], "dtype": "float32"}, ...}, "pipealgos_version": "0.1.0"}``.
A model is rebuilt from its arrays and its *resolved* hyperparameters, so it behaves the same
whatever later releases choose for ``auto``; ``feature_dim`` is the input width the model
takes (requests are checked against it). Version 1 manifests (no resolved values, no width)
still load: their hyperparameters stand in for the resolved ones.
``numpy.load(path, allow_pickle=False)`` reads the arrays with numpy alone.

Saving is atomic: files are written into a temporary folder inside ``model/`` and moved into
place with the manifest last, so a failed job leaves no model (and a server never sees half
of one).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pipealgos

MANIFEST = "manifest.json"
FORMAT = "pipealgos-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
ARRAYS_FILE = "model_algo-1.npz"


class ModelFormatError(ValueError):
    """The model directory does not hold a readable pipealgos model."""


@dataclass
class StoredModel:
    algorithm: str
    hyperparameters: dict[str, Any]
    arrays: dict[str, np.ndarray]
    manifest: dict[str, Any]
    resolved_hyperparameters: dict[str, Any]
    feature_dim: int | None


def save_model(model_dir: Path, algorithm: str, hyperparameters: dict[str, Any], arrays: dict[str, np.ndarray],
               resolved: dict[str, Any] | None = None, feature_dim: int | None = None,
               extra_files: dict[str, bytes] | None = None) -> Path:
    """Write the model; only the leader host calls this. ``resolved`` holds what each ``auto``
    became (merged over ``hyperparameters``); ``feature_dim`` is the model's input width. The
    arrays file is always ``model_algo-1.npz``, as the built-ins' ``model_algo-1``, whatever the
    leader's host name (SDK local mode names hosts ``algo-1-<random>``). ``extra_files`` (name ->
    bytes, such as SageMaker's own ``model_algo-1``) are written beside it, moved into place
    before the manifest like the arrays."""
    model_dir.mkdir(parents=True, exist_ok=True)
    arrays_name = ARRAYS_FILE
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "algorithm": algorithm,
        "hyperparameters": hyperparameters,
        "resolved_hyperparameters": {**hyperparameters, **(resolved or {})},
        "feature_dim": feature_dim,
        "arrays_file": arrays_name,
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
        "pipealgos_version": pipealgos.__version__,
    }
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        np.savez(staging / arrays_name, **arrays)
        for name, payload in (extra_files or {}).items():
            (staging / name).write_bytes(payload)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        moved = []
        try:
            for name in [arrays_name, *(extra_files or {})]:
                os.replace(staging / name, model_dir / name)
                moved.append(name)
            os.replace(staging / MANIFEST, model_dir / MANIFEST)
        except BaseException:  # SIGTERM between the moves: no arrays without a manifest
            for name in moved:
                (model_dir / name).unlink(missing_ok=True)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir / MANIFEST


def load_model(model_dir: Path) -> StoredModel:
    """The model in ``model_dir`` (manifest format 1 or 2). Raises :class:`ModelFormatError`
    naming the file and the problem for a manifest that is not a pipealgos one, lacks a key or
    holds one of the wrong type, and for an ``arrays_file`` that is not an npz archive inside
    ``model_dir`` (a name with ``..``, an absolute path or a symlink leading out is refused)."""
    path = model_dir / MANIFEST
    if not path.exists():
        raise ModelFormatError(f"no {MANIFEST} in {model_dir}: not a pipealgos model directory")
    manifest = _read_manifest(path)
    arrays = _read_arrays(_arrays_path(model_dir, manifest["arrays_file"], path))
    missing = set(manifest["arrays"]) - set(arrays)
    if missing:
        raise ModelFormatError(f"{model_dir}: arrays {sorted(missing)} named in the manifest are missing")
    hyperparameters = manifest["hyperparameters"]
    resolved = manifest.get("resolved_hyperparameters", hyperparameters)
    return StoredModel(manifest["algorithm"], hyperparameters, arrays, manifest, resolved, manifest.get("feature_dim"))


# Keys every readable manifest has (formats 1 and 2), and optional ones, with their JSON types.
_REQUIRED_KEYS = {"algorithm": str, "hyperparameters": dict, "arrays_file": str, "arrays": dict}
_OPTIONAL_KEYS = {"resolved_hyperparameters": dict, "feature_dim": (int, type(None))}


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ModelFormatError(f"{path} holds a JSON {type(manifest).__name__}, not the manifest object "
                               f'{{"format": "{FORMAT}", ...}}')
    if manifest.get("format") != FORMAT or manifest.get("format_version") not in READABLE_VERSIONS:
        raise ModelFormatError(f"{path}: unsupported model format {manifest.get('format')!r} "
                               f"version {manifest.get('format_version')!r}")
    missing = sorted(set(_REQUIRED_KEYS) - set(manifest))
    if missing:
        raise ModelFormatError(f"{path} lacks {missing}: not a complete pipealgos manifest (re-save the model)")
    for key, kind in {**_REQUIRED_KEYS, **_OPTIONAL_KEYS}.items():
        if key in manifest and (not isinstance(manifest[key], kind) or isinstance(manifest[key], bool)):
            raise ModelFormatError(f"{path}: '{key}' is {json.dumps(manifest[key])[:80]}, which is not a valid "
                                   f"{key} (re-save the model)")
    return manifest


def _arrays_path(model_dir: Path, name: str, manifest_path: Path) -> Path:
    """``name`` resolved inside ``model_dir``, symlinks followed; anything leading out is refused."""
    folder = model_dir.resolve()
    target = (folder / name).resolve()
    if Path(name).is_absolute() or not target.is_relative_to(folder) or target == folder:
        raise ModelFormatError(f"{manifest_path}: arrays_file {name!r} is not a file inside {model_dir}; "
                               f"it must name the arrays file next to the manifest (such as {ARRAYS_FILE!r})")
    return target


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an npz archive, read without pickle."""
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise ModelFormatError(f"{path}, the manifest's arrays_file, does not exist") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelFormatError(f"{path} is not a readable npz archive of numeric arrays ({exc})") from None
    raise ModelFormatError(f"{path} is a single .npy array, not the model's npz archive of named arrays")
