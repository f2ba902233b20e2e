"""Request bodies -> feature matrices, and model outputs -> response bodies, per media type.

Everything here is a pure function of bytes and arrays; the Flask app only routes. Nothing
from a request is unpickled or evaluated: JSON goes through :mod:`json`, CSV through numpy,
RecordIO-protobuf through :mod:`pipealgos.io`.

Request forms (``Content-Type``, parameters and case ignored):

* ``application/json``: ``{"instances": [instance, ...]}`` where an instance is
  ``{"features": [..]}``, ``{"data": {"features": {"values": [..]}}}`` (dense) or
  ``{"data": {"features": {"keys": [..], "shape": [d], "values": [..]}}}`` (sparse); any
  ``"configuration"`` is ignored. Choice (not in the spec, for the SDK's ``JSONSerializer``
  of a numpy array): a top-level list of rows ``[[..], [..]]``, a single row ``[..]`` and a
  single instance object are accepted too.
* ``application/jsonlines``: one instance object (or row list) per non-blank line.
* ``text/csv``: one unlabelled record per line (``label_size`` is ignored: inference CSV
  carries no label).
* ``application/x-recordio-protobuf``: RecordIO frames of ``aialgs.data.Record``, dense or
  sparse; labels, if present, are ignored.

Response forms: JSON ``{response_key: [{output: value, ...}, ...]}``; JSON Lines one
``{output: value, ...}`` per line; CSV one line per record holding the outputs' values in
``outputs`` order; RecordIO-protobuf one Record per input row with empty ``features`` and a
Float32Tensor per output in ``label``. An output of shape (n,) is a scalar per record, (n, k)
a list per record. Outputs are float32, as in RecordIO responses; JSON and CSV print each as the
shortest decimal that reads back as the same float32 (``0.1``, not ``0.10000000149011612``).
An output the model returns as integers prints as integers in JSON and CSV (``"predicted_label": 0``)
and is a float32 tensor in RecordIO.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence

import numpy as np
from werkzeug.datastructures import MIMEAccept

from pipealgos.io import DataError, concat
from pipealgos.io.channel import ContentType
from pipealgos.io.csv import CsvDecoder
from pipealgos.io.minibatch import Features, first_nonfinite_row, rows_to_csr
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.recordio import HEADER, encode_frame
from pipealgos.io.stream import decode_buffer

JSON = "application/json"
JSONLINES = "application/jsonlines"
CSV = "text/csv"
RECORDIO = "application/x-recordio-protobuf"

REQUEST_TYPES = (JSON, JSONLINES, CSV, RECORDIO)
RESPONSE_TYPES = (JSON, JSONLINES, CSV, RECORDIO)


class RequestError(Exception):
    """A request the server answers with ``status`` and a plain-text ``message``."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RequestError):
    status = 400


class NotAcceptable(RequestError):
    status = 406


class RequestTimeout(RequestError):
    status = 408


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


def media_type(header: str | None) -> str:
    """``"Text/CSV; charset=utf-8"`` -> ``"text/csv"``; missing -> ``""``. Parsed by the IO
    layer's :meth:`ContentType.parse <pipealgos.io.channel.ContentType.parse>`, as training
    parses a channel's ContentType (so the RecordIO aliases ``protobuf`` and
    ``application/x-labeled-vector-protobuf`` mean RecordIO here too)."""
    return ContentType.parse(header).mime if header and header.strip() else ""


def choose_response_type(accept: MIMEAccept, default: str) -> str:
    """The response type for a request's parsed ``Accept`` (``request.accept_mimetypes``).

    Missing or empty gives ``default``; otherwise werkzeug's ``best_match`` over
    :data:`RESPONSE_TYPES` with ``default`` offered first: the highest ``q`` wins, a more
    specific type beats a wildcard, and at equal ``q`` and specificity the earlier offer wins,
    so ``*/*`` (and ``type/*`` covering ``default``) gives ``default``, ``text/*`` gives
    ``text/csv``. Parameters of accepted types (``;charset=binary``) are ignored, as they are
    in ``Content-Type``. Raises :class:`NotAcceptable` naming the supported types.
    """
    if not accept:
        return default
    offered = [default, *(kind for kind in RESPONSE_TYPES if kind != default)]
    without_parameters = MIMEAccept([(media_type(value), quality) for value, quality in accept])
    chosen = without_parameters.best_match(offered)
    if chosen is None:
        raise NotAcceptable(f"cannot answer in Accept '{accept.to_header()}': supported response types are "
                            f"{', '.join(RESPONSE_TYPES)} (or */* for {default})")
    return chosen


# --- requests ---------------------------------------------------------------------------------


def decode_request(body: bytes, content_type: str | None, feature_dim: int | None,
                   accepted: Sequence[str] = REQUEST_TYPES, algorithm: str = "this model") -> Features:
    """The feature matrix (dense float32 array or CSR) of a request body.

    ``feature_dim`` (the model's input width) is enforced for every record; ``accepted`` are
    the request types the algorithm declares (a subset of :data:`REQUEST_TYPES`). Raises
    :class:`BadRequest` naming the record and the problem, :class:`UnsupportedMediaType` for a
    type not accepted, naming ``algorithm`` and the accepted types.
    """
    kind = media_type(content_type)
    decoders = {JSON: _decode_json, JSONLINES: _decode_jsonlines, CSV: _decode_csv, RECORDIO: _decode_recordio}
    if kind not in decoders or kind not in accepted:
        shown = f"Content-Type '{content_type}'" if content_type else "a request without Content-Type"
        raise UnsupportedMediaType(f"{algorithm} cannot read {shown}: send one of {', '.join(accepted)}")
    if not body.strip():
        raise BadRequest(f"the {kind} request body is empty: send at least one record")
    features = decoders[kind](body, feature_dim)
    if features.shape[0] == 0:
        raise BadRequest(f"the {kind} request body holds no records: send at least one record")
    return features


def _decode_recordio(body: bytes, feature_dim: int | None) -> Features:
    decoder = RecordDecoder("request body (application/x-recordio-protobuf)", feature_dim)
    try:
        blocks = list(decode_buffer(body, decoder))
    except DataError as exc:
        raise BadRequest(str(exc)) from None
    return concat(blocks).features if blocks else np.zeros((0, feature_dim or 0), dtype=np.float32)


def _decode_csv(body: bytes, feature_dim: int | None) -> Features:
    decoder = CsvDecoder("request body (text/csv)", label_size=0, feature_dim=feature_dim)
    try:
        blocks = list(decode_buffer(body, decoder))
    except DataError as exc:
        raise BadRequest(str(exc)) from None
    return concat(blocks).features if blocks else np.zeros((0, feature_dim or 0), dtype=np.float32)


# The widest record a request may describe. Sparse shapes are multiplied in Python integers
# (no fixed-width overflow) and refused beyond this, which also keeps keys within int64.
MAX_FEATURES = 2**31 - 1
_FLOAT32_FIX = "values are read as float32: send finite numbers within +-3.4e38"


def _load_json(text: bytes, where: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{where} is not valid JSON ({exc})") from None
    except RecursionError:  # the parser recurses per nesting level: [[[[... runs out of stack
        raise BadRequest(f"{where} is nested too deeply to read: a request nests at most a few levels "
                         '({"instances": [{"features": [...]}]})') from None


def _preview(value) -> str:
    """The start of ``value`` as JSON, for error messages (never fails, even on deep nesting)."""
    try:
        return json.dumps(value)[:100]
    except (RecursionError, ValueError):
        return f"a {type(value).__name__} nested too deeply to show"


def _decode_json(body: bytes, feature_dim: int | None) -> Features:
    document = _load_json(body, "the application/json request body")
    if isinstance(document, dict) and "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise BadRequest(f"'instances' must be a list of records, got {type(instances).__name__}")
    elif isinstance(document, dict) or (isinstance(document, list) and document and _is_number(document[0])):
        instances = [document]  # one instance object, or one row of numbers
    elif isinstance(document, list):
        instances = document
    else:
        raise BadRequest('the JSON request must be {"instances": [...]} (see the algorithm\'s inference '
                         f"formats), got a {type(document).__name__}")
    return _instances_to_features(instances, feature_dim)


def _decode_jsonlines(body: bytes, feature_dim: int | None) -> Features:
    instances = []
    for number, line in enumerate(body.splitlines()):
        if line.strip():
            instances.append(_load_json(line, f"line {number + 1} of the application/jsonlines body"))
    return _instances_to_features(instances, feature_dim)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _instances_to_features(instances: list, feature_dim: int | None) -> Features:
    dense = _dense_fast_path(instances, feature_dim)
    if dense is not None:
        return dense
    rows = [_instance_row(instance, index, feature_dim) for index, instance in enumerate(instances)]
    if feature_dim is None:
        feature_dim = rows[0][2] if rows else 0
        for index, (_, _, dim) in enumerate(rows):
            if dim != feature_dim:
                raise BadRequest(f"record {index} has {dim} features but record 0 has {feature_dim}: "
                                 "every record of a request must have the same feature count")
    if not any(keys is not None for _, keys, _ in rows):
        return np.array([values for values, _, _ in rows], dtype=np.float32).reshape(len(rows), feature_dim)
    return rows_to_csr([values for values, _, _ in rows], [keys for _, keys, _ in rows], feature_dim,
                       sum_duplicates=True)


def _dense_fast_path(instances: list, feature_dim: int | None) -> np.ndarray | None:
    """All records dense ``{"features": [...]}`` (or plain rows) of one width: one numpy call.
    None sends the request to the per-record path, which names any malformed record; a value
    that is not finite as float32 is refused here, naming its record."""
    try:
        rows = [inst["features"] if isinstance(inst, dict) else inst for inst in instances]
        array = np.array(rows)
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError):
        return None
    if array.ndim != 2 or array.dtype.kind not in "fi" or (feature_dim is not None and array.shape[1] != feature_dim):
        return None
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused just below
        array = array.astype(np.float32)
    row = first_nonfinite_row(array)
    if row is not None:
        where = f"record {row} 'features'" if isinstance(instances[row], dict) else f"record {row}"
        raise BadRequest(f"{where} values contain NaN or infinity ({_FLOAT32_FIX})")
    return array


def _instance_row(instance, index: int, feature_dim: int | None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(values, sparse keys or None, feature count) of one instance; BadRequest names it."""
    where = f"record {index}"
    if isinstance(instance, list):
        values, keys, shape = instance, None, None
    elif isinstance(instance, dict) and "features" in instance:
        values, keys, shape = instance["features"], None, None
        where += " 'features'"
    elif isinstance(instance, dict) and isinstance(instance.get("data"), dict) and \
            isinstance(instance["data"].get("features"), dict):
        tensor = instance["data"]["features"]
        values, keys, shape = tensor.get("values"), tensor.get("keys"), tensor.get("shape")
        where += " data.features"
        if values is None:
            raise BadRequest(f"{where} has no 'values'")
    else:
        raise BadRequest(f'record {index} must be {{"features": [...]}} or {{"data": {{"features": '
                         f'{{"values": [...]}}}}}} (optionally with "keys" and "shape" for sparse data), '
                         f"got {_preview(instance)}")
    array = _float32_values(values, f"{where} values")
    if keys is None:
        dim = len(array)
        if shape is not None and _shape_size(shape, where) != dim:
            raise BadRequest(f"{where}: {dim} dense values do not fill shape {_preview(shape)}")
        _check_dim(dim, feature_dim, where)
        return array, None, dim
    if shape is None:
        raise BadRequest(f"{where}: sparse records (with 'keys') need 'shape': [feature_dim]")
    dim = _shape_size(shape, where)
    _check_dim(dim, feature_dim, where)
    return array, _sparse_keys(keys, len(array), dim, where), dim


def _check_number_list(values, what: str) -> None:
    if not isinstance(values, list) or not all(_is_number(v) for v in values):
        raise BadRequest(f"{what} must be a flat list of numbers, got {_preview(values)}")


def _float32_values(values, what: str) -> np.ndarray:
    """``values`` as float32, refused when any is not finite *after* the cast (1e40 is a finite
    float64 but infinite as float32)."""
    _check_number_list(values, what)
    try:
        with np.errstate(over="ignore"):
            array = np.asarray(values, dtype=np.float64).astype(np.float32)
    except OverflowError:  # a JSON integer beyond float64 itself
        array = np.full(1, np.inf, dtype=np.float32)
    if not np.isfinite(array).all():
        raise BadRequest(f"{what} contain NaN or infinity ({_FLOAT32_FIX})")
    return array


def _whole_numbers(values, what: str) -> list[int]:
    """``values`` as exact Python integers (whole floats such as ``3.0`` are accepted)."""
    _check_number_list(values, what)
    if not all(isinstance(v, int) or (math.isfinite(v) and v == int(v)) for v in values):
        raise BadRequest(f"{what} must be whole numbers, got {_preview(values)}")
    return [int(v) for v in values]


def _shape_size(shape, where: str) -> int:
    """The feature count a ``shape`` describes, computed exactly and range-checked."""
    sizes = _whole_numbers(shape, f"{where} shape")
    size = math.prod(sizes)
    if not sizes or min(sizes) < 1 or size > MAX_FEATURES:
        raise BadRequest(f"{where}: shape {_preview(shape)} is out of range: a shape is a list of sizes of at "
                         f"least 1 whose product, the feature count, is at most {MAX_FEATURES}")
    return size


def _sparse_keys(keys, count: int, dim: int, where: str) -> np.ndarray:
    """``keys`` as int64 indices, each in ``[0, dim)``, one per value."""
    indices = _whole_numbers(keys, f"{where} keys")
    if len(indices) != count:
        raise BadRequest(f"{where}: {len(indices)} keys but {count} values; they must pair up")
    outside = next((key for key in indices if not 0 <= key < dim), None)
    if outside is not None:
        raise BadRequest(f"{where}: key {outside} is outside the shape [{dim}] "
                         f"(keys are 0-based indices below {dim})")
    return np.asarray(indices, dtype=np.int64)


def _check_dim(dim: int, feature_dim: int | None, where: str) -> None:
    if feature_dim is not None and dim != feature_dim:
        raise BadRequest(f"{where} has {dim} features, but the model takes {feature_dim} (its feature_dim): "
                         f"send records of {feature_dim} features")


# --- responses --------------------------------------------------------------------------------


def encode_response(outputs: dict[str, np.ndarray], keys: Sequence[str], response_key: str, accept: str) -> bytes:
    """The response body in media type ``accept`` (one of :data:`RESPONSE_TYPES`)."""
    columns = [(key, _output_array(outputs[key])) for key in keys]
    if accept == RECORDIO:
        return _encode_recordio([(key, array.astype(np.float32, copy=False)) for key, array in columns])
    if accept == CSV:
        return _encode_csv(columns)
    records = _json_records(columns)
    if accept == JSONLINES:
        return ("\n".join(records) + "\n").encode()
    return ("{" + json.dumps(response_key) + ": [" + ", ".join(records) + "]}").encode()


def _output_array(values) -> np.ndarray:
    """Integer outputs stay integers (printed ``0``, not ``0.0``, in JSON and CSV); all other
    outputs become float32."""
    array = np.asarray(values)
    return array if array.dtype.kind in "iu" else array.astype(np.float32, copy=False)


def _float_text(array: np.ndarray, for_json: bool) -> list:
    """Shortest decimal that reads back as the same float32 (or the integer), per element
    (nested lists of str). JSON has no NaN/infinity literals; like :func:`json.dumps`, they
    become NaN/Infinity."""
    text = array.astype(str)
    if array.dtype.kind in "iu":
        return text.tolist()
    if for_json and not np.isfinite(array).all():
        text = np.where(np.isnan(array), "NaN", np.where(np.isposinf(array), "Infinity",
                        np.where(np.isneginf(array), "-Infinity", text)))
    return text.tolist()


def _json_records(columns: list[tuple[str, np.ndarray]]) -> list[str]:
    """One JSON object text per record, fields in ``columns`` order; built from the numbers'
    text directly (float reprs through Python floats cost ~3 us each)."""
    fields = []
    for key, array in columns:
        prefix = json.dumps(key) + ": "
        text = _float_text(array, for_json=True)
        if array.ndim == 1:
            fields.append([prefix + value for value in text])
        else:
            fields.append([prefix + "[" + ", ".join(row) + "]" for row in text])
    return ["{" + ", ".join(record) + "}" for record in zip(*fields)]


def _encode_csv(columns: list[tuple[str, np.ndarray]]) -> bytes:
    n = len(columns[0][1])
    texts = [_float_text(array.reshape(n, -1), for_json=False) for _, array in columns]
    return "".join(",".join(value for row in parts for value in row) + "\n" for parts in zip(*texts)).encode()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _label_entry(key: str, count: int) -> tuple[bytes, int]:
    """``Record.label`` map entry ``key -> Float32Tensor(values=[0.0]*count)`` and the offset of
    the packed values inside it. (Record.label = field 2; entry key 1, value 2;
    Value.float32_tensor = field 2; Float32Tensor.values = field 1, packed.)"""
    values = _length_delimited(1, bytes(4 * count)) if count else b""
    value = _length_delimited(2, values)
    entry = _length_delimited(1, key.encode()) + _length_delimited(2, value)
    encoded = _length_delimited(2, entry)
    return encoded, len(encoded) - 4 * count


def _encode_recordio(columns: list[tuple[str, np.ndarray]]) -> bytes:
    """Every record has the same layout, so one template frame is tiled n times and each
    output's float32 bytes are written into their column of the tile."""
    n = len(columns[0][1])
    payload, slots = b"", []
    for key, array in columns:
        values = array.reshape(n, -1)
        entry, offset = _label_entry(key, values.shape[1])
        slots.append((len(payload) + offset, values))
        payload += entry
    frame = encode_frame(payload)
    block = np.tile(np.frombuffer(frame, dtype=np.uint8), (n, 1))
    for offset, values in slots:
        start = HEADER.size + offset
        width = 4 * values.shape[1]
        block[:, start : start + width] = np.ascontiguousarray(values, dtype="<f4").view(np.uint8)
    return block.tobytes()
