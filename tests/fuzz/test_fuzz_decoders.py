"""Fuzzing the readers of untrusted bytes: only the project's typed errors may come out.

Targets: the RecordIO framing (``iter_records``), the Record decoder (general path, and the
sparse fast path in both implementations, numpy and the compiled kernel), the CSV reader and
the server's request parser (``decode_request``: JSON, JSON Lines, CSV, RecordIO). Any other
exception, a crash of the process, or an input that takes longer than ``HANG_SECONDS`` fails.

Budget: ``make test`` replays a fixed, derandomized set of examples (about half a minute in
all); ``make fuzz`` sets ``PIPEALGOS_FUZZ_EXAMPLES`` (examples per target) and
``PIPEALGOS_FUZZ_RANDOM=1`` (new random examples each run; a failure prints the
``@reproduce_failure`` blob to replay it). Inputs are built from valid streams and then
damaged, or from the formats' own building blocks, so that most reach deep into the parsers
rather than failing at the first byte.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
from contextlib import contextmanager

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipealgos.io import DataError, record_pb2, sparse_run
from pipealgos.io.csv import CsvDecoder
from pipealgos.io.protobuf import RecordDecoder, _is_record
from pipealgos.io.recordio import FIRST, LAST, MAGIC, MIDDLE, WHOLE, encode_frame, iter_records
from pipealgos.io.stream import decode_buffer, decode_stream
from pipealgos.io.writer import write_dense, write_sparse
from pipealgos.serve.formats import RequestError, decode_request

HANG_SECONDS = 20
EXAMPLES = int(os.environ.get("PIPEALGOS_FUZZ_EXAMPLES", "0"))
RANDOM = os.environ.get("PIPEALGOS_FUZZ_RANDOM") == "1"


def budget(examples: int):
    """Hypothesis settings for one target: ``examples`` in ``make test``, derandomized."""
    return settings(max_examples=EXAMPLES or examples, derandomize=not RANDOM, database=None, deadline=None,
                    print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                            HealthCheck.filter_too_much])


class Hang(BaseException):
    """Not an Exception: no ``except Exception`` in the code under test can swallow it."""


@contextmanager
def no_hang(seconds: float = HANG_SECONDS):
    """Fails the example (raising :class:`Hang`) if the block runs longer than ``seconds``."""
    def expire(signum, frame):
        raise Hang(f"an input took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- building blocks ------------------------------------------------------------------------------

FLOATS = st.one_of(st.floats(width=32), st.floats(), st.sampled_from([0.0, 1.0, -1.0, 1e40, -1e39, 3.4028235e38]))
UINT64 = st.one_of(st.integers(0, 20), st.integers(0, 2**64 - 1),
                   st.sampled_from([2**28 - 1, 2**28, 2**31 - 1, 2**31, 2**32, 2**62, 2**63, 2**64 - 1]))
INT32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def tensors(draw, value: record_pb2.Value) -> None:
    """Fill ``value`` with a tensor of any kind, values, keys and shape (or bytes)."""
    kind = draw(st.sampled_from(["float32_tensor", "float64_tensor", "int32_tensor", "bytes", "none"]))
    if kind == "none":
        return
    if kind == "bytes":
        value.bytes.value.extend(draw(st.lists(st.binary(max_size=8), max_size=3)))
        return
    tensor = getattr(value, kind)
    tensor.SetInParent()
    size = draw(st.integers(0, 12))
    tensor.values.extend(draw(st.lists(INT32 if kind == "int32_tensor" else FLOATS, min_size=size, max_size=size)))
    if draw(st.booleans()):
        keys = draw(st.lists(UINT64, min_size=size, max_size=size) | st.lists(UINT64, max_size=14))
        tensor.keys.extend(keys)
    if draw(st.booleans()):
        tensor.shape.extend(draw(st.lists(UINT64, min_size=1, max_size=3)))


@st.composite
def record_payloads(draw) -> bytes:
    """A Record with arbitrary tensors (plausible keys most of the time), uid and the like."""
    record = record_pb2.Record()
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(["values", "values", "other", ""]))
        draw(tensors(record.features[key]))
    if draw(st.booleans()):
        draw(tensors(record.label["values"]))
    if draw(st.booleans()):
        record.uid = draw(st.text(max_size=5))
    return record.SerializeToString()


@st.composite
def writer_streams(draw) -> bytes:
    """What the SDK-compatible writers produce: dense or sparse rows, float32/float64, labels or not."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, dim = draw(st.integers(1, 40)), draw(st.sampled_from([1, 3, 50, 300, 70_000]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    labels = draw(st.sampled_from([None, np.float32, np.float64, np.int64]))
    y = None if labels is None else rng.integers(0, 300, rows).astype(labels)
    out = io.BytesIO()
    if draw(st.booleans()) and dim <= 300:
        write_dense(out, rng.standard_normal((rows, dim)).astype(dtype), y)
    else:
        nnz = rng.integers(0, 6, rows)
        cells = (np.repeat(np.arange(rows), nnz), rng.integers(0, dim, nnz.sum()))
        write_sparse(out, sp.csr_matrix((rng.standard_normal(nnz.sum()), cells), shape=(rows, dim), dtype=dtype), y)
    return out.getvalue()


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """``data`` with a few bytes changed, inserted or removed, perhaps cut short."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["set", "set", "insert", "delete", "word"]))
        if action == "set":
            data[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, data[at] ^ 0x01, data[at] ^ 0x80]))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        else:  # a varint-sized or length-sized word: the places where sizes live
            data[at : at + 4] = struct.pack("<I", draw(st.sampled_from([0, 2**28, 2**29 - 1, 2**31, 2**32 - 1])))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def recordio_streams(draw) -> bytes:
    """Frames of arbitrary Records, or of the writers' records, damaged or not, with odd frames between."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.sampled_from(["writer", "writer", "record", "split", "raw", "header"]))
        if choice == "writer":
            parts.append(draw(writer_streams()))
        elif choice == "record":
            parts.append(encode_frame(draw(record_payloads())))
        elif choice == "split":  # a record cut into pieces with continuation flags
            payload = draw(record_payloads())
            cut = draw(st.integers(0, len(payload)))
            flags = draw(st.sampled_from([(FIRST, LAST), (FIRST, MIDDLE), (MIDDLE, LAST), (LAST, FIRST), (FIRST, WHOLE)]))
            parts.append(encode_frame(payload[:cut], flags[0]) + encode_frame(payload[cut:], flags[1]))
        elif choice == "raw":
            parts.append(draw(st.binary(max_size=64)))
        else:  # a header announcing any length and flag
            parts.append(struct.pack("<II", MAGIC, draw(st.integers(0, 2**32 - 1))) + draw(st.binary(max_size=32)))
    return draw(damaged(b"".join(parts))) if draw(st.booleans()) else b"".join(parts)


def expect_only(errors: type | tuple, call) -> None:
    """Run ``call()``; any exception but ``errors`` fails the test (a hang does too)."""
    with no_hang():
        try:
            call()
        except errors:
            pass


# --- RecordIO framing -----------------------------------------------------------------------------

@budget(400)
@given(data=recordio_streams())
def test_recordio_framing_raises_only_data_errors(data):
    expect_only(DataError, lambda: list(iter_records(io.BytesIO(data), "fuzz", judge=_is_record)))


# --- the Record decoder, every path ---------------------------------------------------------------

PATHS = ["general", "numpy", "c"]  # a missing kernel fails (tests/io/test_sparse_run.py says why)


def decode_records(data: bytes, path: str, buffer_size: int, feature_dim: int | None, in_memory: bool) -> None:
    before = sparse_run.implementation
    sparse_run.implementation = "numpy" if path == "general" else path
    try:
        decoder = RecordDecoder("fuzz", feature_dim, fast_paths=path != "general")
        if in_memory:
            list(decode_buffer(data, decoder, buffer_size))
        else:
            list(decode_stream(io.BytesIO(data), decoder, buffer_size))
    finally:
        sparse_run.implementation = before


@pytest.mark.parametrize("path", PATHS)
@budget(300)
@given(data=recordio_streams(), buffer_size=st.sampled_from([64, 1000, 1 << 16]),
       feature_dim=st.sampled_from([None, None, 3, 50]), in_memory=st.booleans())
def test_record_decoder_raises_only_data_errors(path, data, buffer_size, feature_dim, in_memory):
    expect_only(DataError, lambda: decode_records(data, path, buffer_size, feature_dim, in_memory))


# --- CSV --------------------------------------------------------------------------------------------

CSV_TOKENS = st.sampled_from(["0", "1", "-2.5", "1e40", "3.4e38", "nan", "inf", "-inf", "1_0", "0x1f", "  7 ",
                              "", "a", "#", '"1"', "\u0661", "\x00", "\ufeff1", "1e-50", "9" * 400])
CSV_SEPARATORS = st.sampled_from([",", ",", ",", "\n", "\n", "\r\n", "\r", " ", "\t", ";", "\n\n", "\n   \n"])


@st.composite
def csv_texts(draw) -> bytes:
    pieces = draw(st.lists(st.tuples(CSV_TOKENS, CSV_SEPARATORS), max_size=40))
    text = "".join(a + b for a, b in pieces).encode()
    if draw(st.integers(0, 9)) == 0:  # now and then not even UTF-8
        text += draw(st.binary(max_size=16))
    return text


@budget(600)
@given(data=csv_texts(), label_size=st.sampled_from([0, 1]), feature_dim=st.sampled_from([None, 1, 2]),
       buffer_size=st.sampled_from([4, 16, 1 << 16]), in_memory=st.booleans())
def test_csv_reader_raises_only_data_errors(data, label_size, feature_dim, buffer_size, in_memory):
    def decode():
        decoder = CsvDecoder("fuzz.csv", label_size, feature_dim)
        blocks = decode_buffer(data, decoder, buffer_size) if in_memory else \
            decode_stream(io.BytesIO(data), decoder, buffer_size)
        for block in blocks:
            assert block.features.dtype == np.float32 and np.isfinite(block.features).all()

    expect_only(DataError, decode)


# --- the server's request parser -----------------------------------------------------------------

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                         st.sampled_from([1e40, -1e39, 2**63, 2**64, 0.5]), st.text(max_size=4))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.sampled_from(["features", "data", "values", "keys", "shape", "x"]),
                                           inner, max_size=3), max_leaves=12)
NUMBERS = st.lists(st.one_of(st.integers(-3, 2**65), st.floats(allow_nan=False), JSON_SCALARS), max_size=6)


@st.composite
def instances(draw):
    """Instances of the accepted forms, with arbitrary contents, or anything JSON."""
    form = draw(st.sampled_from(["features", "dense", "sparse", "row", "any"]))
    if form == "features":
        return {"features": draw(NUMBERS)}
    if form == "dense":
        return {"data": {"features": {"values": draw(NUMBERS)}}}
    if form == "sparse":
        tensor = {"values": draw(NUMBERS), "keys": draw(NUMBERS), "shape": draw(NUMBERS)}
        return {"data": {"features": {k: v for k, v in tensor.items() if draw(st.integers(0, 5))}}}
    if form == "row":
        return draw(NUMBERS)
    return draw(JSON_VALUES)


@st.composite
def request_bodies(draw) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["application/json", "application/json", "application/jsonlines", "text/csv",
                                 "application/x-recordio-protobuf"]))
    if kind == "application/x-recordio-protobuf":
        return draw(recordio_streams()), kind
    if kind == "text/csv":
        return draw(csv_texts()), kind
    items = draw(st.lists(instances(), max_size=4))
    if kind == "application/jsonlines":
        body = "\n".join(json.dumps(item) for item in items).encode()
    else:
        document = draw(st.sampled_from(["instances", "list", "single"]))
        shaped = {"instances": items} if document == "instances" else items if document == "list" else \
            (items[0] if items else {})
        body = json.dumps(shaped).encode()
    return (draw(damaged(body)) if draw(st.integers(0, 4)) == 0 else body), kind


@budget(700)
@given(request=request_bodies(), feature_dim=st.sampled_from([None, 1, 3]))
def test_request_parser_raises_only_request_errors(request, feature_dim):
    body, content_type = request
    expect_only(RequestError, lambda: decode_request(body, content_type, feature_dim))
