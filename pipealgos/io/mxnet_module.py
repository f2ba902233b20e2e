"""The zip and symbol-graph files SageMaker's built-ins wrap their models in, without MXNet.

SageMaker unpacks ``model.tar.gz`` into ``/opt/ml/model``; its built-ins leave
``model_algo-1`` there (:data:`MODEL_FILE`). For k-means, PCA and LDA it is an NDArray file
(:mod:`.ndarray`); linear learner, factorization machines and NTM make it a **zip** of an
MXNet Module: a symbol graph (JSON), an NDArray file of parameters (``arg:<name>``) and JSON
side files. This module reads and writes those zips (:func:`read_zip`, :func:`write_zip`) and
writes symbol graphs (:func:`symbol_json`) in the layout ``mx.sym.load`` reads::

    {"nodes": [{"op": "null", "name": "data", "inputs": []}, ...,
               {"op": "dot", "name": "dot0", "inputs": [[0, 0, 0], [1, 0, 0]]}, ...],
     "arg_nodes": [indices of the "null" nodes], "node_row_ptr": [0, 1, ..., len(nodes)],
     "heads": [[output node, 0, 0]], "attrs": {"mxnet_version": ["int", 10300]}}

Every node here has exactly one output, so ``node_row_ptr`` counts one row per node.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .errors import DataError
from .ndarray import read_ndarrays, write_ndarrays

MODEL_FILE = "model_algo-1"
ZIP_MAGIC = b"PK\x03\x04"
# The graph's MXNet version: 1.3.0, old enough for every 1.x release to load (newer ones upgrade it).
MXNET_VERSION = 10300
# A fixed member timestamp keeps the bytes we write the same for the same model.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def is_zip(data: bytes) -> bool:
    return data[:4] == ZIP_MAGIC


def max_inflated_bytes() -> int:
    """The most a model archive (a SageMaker model zip, or the ``model.tar.gz`` that ``serve``
    unpacks) may inflate to: ``PIPEALGOS_MODEL_MAX_EXTRACTED_MB`` (default 4096, far above any
    model the built-ins make, far below a zip bomb's inflation). Read here for every reader."""
    text = os.environ.get("PIPEALGOS_MODEL_MAX_EXTRACTED_MB", "").strip() or "4096"
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = float("nan")
    if not (megabytes > 0 and math.isfinite(megabytes)):
        raise DataError(f"PIPEALGOS_MODEL_MAX_EXTRACTED_MB={text!r} is not a size in MB > 0",
                        fix="set it to a number of megabytes such as 4096, or unset it")
    return int(megabytes * 1024 * 1024)


def model_file(files: dict[str, bytes]) -> bytes:
    """The ``model_algo-1`` file every SageMaker built-in leaves (the first host's model)."""
    if MODEL_FILE not in files:
        raise DataError(f"no {MODEL_FILE} among the model's files {sorted(files)}",
                        fix="a SageMaker built-in algorithm's model.tar.gz holds model_algo-1")
    return files[MODEL_FILE]


def ndarray_model(files: dict[str, bytes]) -> dict[str, np.ndarray] | list[np.ndarray]:
    """The arrays of ``model_algo-1`` when it is an NDArray file (k-means, PCA, LDA)."""
    return read_ndarrays(model_file(files), MODEL_FILE)


def ndarray_model_or_none(files: dict[str, bytes]) -> dict[str, np.ndarray] | list[np.ndarray] | None:
    """:func:`ndarray_model`, or None when the files hold no readable NDArray ``model_algo-1``
    (for telling layouts apart)."""
    try:
        return ndarray_model(files)
    except DataError:
        return None


def zip_names(files: dict[str, bytes]) -> set[str]:
    """The member names of ``model_algo-1`` when it is a readable zip, else an empty set
    (read from the central directory, nothing inflated)."""
    data = files.get(MODEL_FILE, b"")
    if not is_zip(data):
        return set()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return set(archive.namelist())
    except (zipfile.BadZipFile, EOFError, ValueError):
        return set()


def require_finite(array: np.ndarray, name: str, source: str) -> np.ndarray:
    """``array`` as float32, refused when that holds NaN or infinity (a model answering NaN)."""
    values = np.asarray(array, dtype=np.float32)
    if not np.isfinite(values).all():
        raise DataError(f"array '{name}' holds NaN or infinity (as float32)", source=source,
                        fix="the model is damaged or diverged in training; retrain it")
    return values


def read_zip(data: bytes, source: str, max_bytes: int | None = None) -> dict[str, bytes]:
    """The members of a zip held in memory, by name (folders skipped). Raises :class:`DataError`
    naming ``source`` for a damaged zip, a member that does not match its CRC, or members that
    would inflate to more than ``max_bytes`` in all (default :func:`max_inflated_bytes`; checked
    from the headers, before inflating anything)."""
    fix = "model_algo-1 of this algorithm is a zip of MXNet Module files, as SageMaker's container writes it"
    max_bytes = max_inflated_bytes() if max_bytes is None else max_bytes
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            total = sum(info.file_size for info in members)
            if total > max_bytes:
                raise DataError(f"zip members would inflate to {total} bytes, more than the {max_bytes} allowed",
                                source=source, fix="raise PIPEALGOS_MODEL_MAX_EXTRACTED_MB if the model is that large")
            return {info.filename: archive.read(info) for info in members}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"not a readable zip ({exc})", source=source, fix=fix) from None


def write_zip(members: dict[str, bytes]) -> bytes:
    """A deflated zip of ``members`` in the given order, byte-identical for identical input."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, payload in members.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, payload)
    return buffer.getvalue()


def zip_member(members: dict[str, bytes], name: str, source: str) -> bytes:
    """``members[name]``, or a :class:`DataError` listing what the zip holds instead."""
    if name not in members:
        raise DataError(f"the zip has no member '{name}' (it holds {sorted(members)})", source=source,
                        fix="the file is not the model of the algorithm it was read as, or it is incomplete")
    return members[name]


def json_member(members: dict[str, bytes], name: str, source: str) -> dict:
    """A zip member holding one JSON object."""
    try:
        value = json.loads(zip_member(members, name, source))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"member '{name}' is not JSON ({exc})", source=source) from None
    if not isinstance(value, dict):
        raise DataError(f"member '{name}' holds a JSON {type(value).__name__}, not an object", source=source)
    return value


@dataclass(frozen=True)
class Node:
    """One node of a symbol graph: an operator (``op``; ``"null"`` for a variable: the input or
    a parameter) applied to the outputs of earlier nodes (``inputs``, by index)."""

    op: str
    name: str
    inputs: tuple[int, ...] = ()
    attrs: dict[str, str] = field(default_factory=dict)


def symbol_json(nodes: list[Node], heads: list[int]) -> str:
    """The symbol graph of ``nodes`` (in topological order) whose outputs are nodes ``heads``."""
    for index, node in enumerate(nodes):
        if any(not 0 <= i < index for i in node.inputs):
            raise ValueError(f"node {index} ({node.name}) takes inputs {node.inputs}: only earlier nodes can be inputs")
    graph = {
        "nodes": [{"op": node.op, "name": node.name, **({"attrs": dict(node.attrs)} if node.attrs else {}),
                   "inputs": [[i, 0, 0] for i in node.inputs]} for node in nodes],
        "arg_nodes": [index for index, node in enumerate(nodes) if node.op == "null"],
        "node_row_ptr": list(range(len(nodes) + 1)),
        "heads": [[head, 0, 0] for head in heads],
        "attrs": {"mxnet_version": ["int", MXNET_VERSION]},
    }
    return json.dumps(graph, indent=2)


def params_file(arrays: dict[str, np.ndarray], aux: tuple[str, ...] = ()) -> bytes:
    """An MXNet Module's ``.params`` NDArray file: each array under ``arg:<name>``, or
    ``aux:<name>`` for the auxiliary states named in ``aux`` (batch norm's moving statistics)."""
    return write_ndarrays({f"{'aux' if name in aux else 'arg'}:{name}": np.asarray(array, dtype=np.float32)
                           for name, array in arrays.items()})


def read_params_file(data: bytes, source: str) -> dict[str, np.ndarray]:
    """The arrays of a ``.params`` file by name, the ``arg:`` / ``aux:`` prefixes dropped."""
    saved = read_ndarrays(data, source)
    if not isinstance(saved, dict):
        raise DataError(f"holds an unnamed list of {len(saved)} arrays, not named parameters", source=source)
    return {name.split(":", 1)[1] if name[:4] in ("arg:", "aux:") else name: array for name, array in saved.items()}


def module_params(files: dict[str, bytes], member: str = "params") -> dict[str, np.ndarray]:
    """The parameters in member ``member`` of the zip ``model_algo-1`` (NTM, FM), prefixes dropped."""
    members = read_zip(model_file(files), MODEL_FILE)
    return read_params_file(zip_member(members, member, MODEL_FILE), f"{MODEL_FILE} member {member}")


def module_zip_holds(files: dict[str, bytes], members: set[str], params: set[str]) -> bool:
    """Whether ``model_algo-1`` is a zip holding ``members`` whose ``params`` member names ``params``."""
    if not members <= zip_names(files):
        return False
    try:
        return params <= set(module_params(files))
    except DataError:
        return False


def shape_attr(shape: tuple[int, ...]) -> dict[str, str]:
    """A variable's ``__shape__`` attribute as MXNet writes it, e.g. ``"(50, 1)"``."""
    return {"__shape__": "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"}
