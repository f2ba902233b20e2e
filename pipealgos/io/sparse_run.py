"""Decoding runs of sparse records: a buffer of frames -> one CSR block.

The SDK's ``write_spmatrix_to_sparse_tensor`` (and our writer) give every sparse record the
same shape of bytes, with only lengths and values varying::

    0a L1                      Record.features entry
      0a 06 "values"           map key
      12 L2  T L3              Value -> Float32Tensor (T=0x12) or Float64Tensor (T=0x1a)
        [0a L4 <values>]       packed float32/float64 (absent when the row is empty)
        [12 L5 <keys>]         packed uint64 varints (absent when the row is empty)
        1a L6 <dim>            shape: one varint
    [12 ... label entry]       float32, float64 or small int32 scalar (see _LABELS)

:func:`decode_sparse_run` takes the leading run of such records in a buffer. Every record is
checked (tags, nested lengths adding up exactly, shape, key count, keys < dim, label
layout); the run ends before the first record that deviates, which the caller then hands to
the general (upb) path. Within a run the results are identical to the general path's.

Two implementations do exactly this; :data:`implementation` says which one is used:

* ``"c"``, the compiled kernel ``_sparse_kernel.c`` (built by ``setup.py`` where a C
  compiler is present): one walk over the frames, record by record, called twice per run:
  once to count records and values, then to fill numpy arrays of exactly that size. On the
  benchmark's sparse set (``benchmarks/io_decode.py``) it decodes ~1.1 GB/s, ~6x the numpy
  implementation; whole ``RecordDecoder`` runs are ~4-5x faster (CSR assembly and checks remain).
* ``"numpy"``, the fallback when the extension is not built: numpy arrays hold one position
  per record and advance field by field; the packed values and keys of all records are cut
  out with one mask each (built by ``np.repeat`` over gap/segment lengths) and the keys'
  varints decoded for all records together. It reaches ~5-8x the SDK path on sparse data,
  ~5x slower than the kernel: with ~3 bytes per key and ~50 keys per record, each
  whole-array pass over the bytes or the key positions is expensive (measured on a 22 MB
  buffer: ``flatnonzero(buf < 0x80)`` 24 ms, a ``diff`` of its 10 M positions 29 ms,
  gathering 3 M key words 35 ms), and locating, gathering and decoding the varints takes
  several such passes, which is why the compiled kernel exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .recordio import LENGTH_MASK, MAGIC

try:
    from . import _sparse_kernel
except ImportError:  # built without a C compiler
    _sparse_kernel = None

#: ``"c"`` when the compiled kernel is importable, else ``"numpy"``. Tests set it to compare
#: the two implementations; the benchmark reports it.
implementation = "numpy" if _sparse_kernel is None else "c"

_VALUES_KEY = np.frombuffer(b"\x0a\x06values", dtype=np.uint8)
_TENSOR_DTYPES = {0x12: np.dtype("<f4"), 0x1A: np.dtype("<f8")}

# Label entries the run accepts: 16 constant bytes, then the value (float32, float64, or an
# int32 varint below 128, which is what integer class labels look like).
_LABELS = [
    (np.frombuffer(b"\x12\x12\x0a\x06values\x12\x08\x12\x06\x0a\x04", dtype=np.uint8), np.dtype("<f4")),
    (np.frombuffer(b"\x12\x16\x0a\x06values\x12\x0c\x1a\x0a\x0a\x08", dtype=np.uint8), np.dtype("<f8")),
    (np.frombuffer(b"\x12\x0f\x0a\x06values\x12\x05\x3a\x03\x0a\x01", dtype=np.uint8), np.dtype("u1")),
]
_LABEL_PREFIX = 16


@dataclass
class SparseRun:
    """``count`` whole records decoded from ``nbytes`` bytes of frames."""

    count: int
    nbytes: int
    data: np.ndarray  # float32 values of all rows
    indices: np.ndarray  # int32 column of each value
    indptr: np.ndarray  # int64 (count + 1,)
    labels: np.ndarray | None  # float32 (count,)
    feature_dim: int


def chain_frames(buf: np.ndarray, pos: int, end: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and lrec words of the leading whole, complete frames from ``buf[pos]`` on.

    Finds every magic word at a 4-aligned offset within ``window`` bytes of ``pos``, then
    keeps the chain that starts at ``pos`` and follows each frame's length to the next
    magic. A magic value inside a payload breaks the chain there, so it can only shorten the
    run, never misplace a frame. ``pos`` must be 4-aligned (frames always are).
    """
    words = buf[pos : pos + min(end - pos, window) // 4 * 4].view("<u4")
    cand = np.flatnonzero(words[:-1] == MAGIC)  # each needs its lrec word too
    if not len(cand) or cand[0] != 0:
        return np.empty(0, np.int64), np.empty(0, np.uint32)
    lrec = words[cand + 1]
    nxt = cand + 2 + ((lrec & LENGTH_MASK).astype(np.int64) + 3) // 4
    broken = np.flatnonzero(nxt[:-1] != cand[1:])
    n = int(broken[0]) + 1 if len(broken) else len(cand)
    good = (nxt[:n] * 4 <= end - pos) & ((lrec[:n] >> 29) == 0)
    if not good.all():
        n = int(np.argmin(good))
    return pos + cand[:n].astype(np.int64) * 4, lrec[:n]


def _varint(data: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Varints of up to 4 bytes (< 2**28) at positions ``at`` -> (value, next position, valid).

    Reads are clipped into ``data``; ``valid`` is False where the varint is longer.
    """
    last = len(data) - 1
    byte = data[np.minimum(at, last)].astype(np.int64)
    value = byte & 0x7F
    more = byte >= 0x80
    end = at + 1
    for i in range(1, 4):
        if not more.any():  # the usual case after one or two bytes
            break
        byte = data[np.minimum(at + i, last)].astype(np.int64)
        value = np.where(more, value | ((byte & 0x7F) << (7 * i)), value)
        end += more
        more = more & (byte >= 0x80)
    return value, end, ~more


def _byte_at(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    return data[np.minimum(at, len(data) - 1)]


def _gather_bytes(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of ``data[s : s + l]`` for ascending, non-overlapping (s, l).

    Builds a boolean mask with one ``np.repeat`` of alternating False/True over the gaps and
    the segments, then compresses: measured 2-3x faster here than gathering with an index
    array made by repeat + arange (the mask has long runs, so the compress predicts well).
    """
    if not len(starts):
        return np.empty(0, dtype=data.dtype)
    first = int(starts[0])  # the mask starts there: its size is that of the run, not of data
    runs = np.empty(2 * len(starts), dtype=np.int64)
    runs[0] = 0
    runs[2::2] = starts[1:] - starts[:-1] - lengths[:-1]
    runs[1::2] = lengths
    on_off = np.zeros(len(runs), dtype=bool)
    on_off[1::2] = True
    mask = np.repeat(on_off, runs)
    return data[first : first + len(mask)][mask]


def _gather_values(data: np.ndarray, starts: np.ndarray, counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Packed fixed-width values at byte offsets ``starts`` (``counts`` each), as float32."""
    raw = _gather_bytes(data, starts, counts * dtype.itemsize)
    with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused by the decoder's check
        return raw.view(dtype).astype(np.float32, copy=False)


# Masks keeping a little-endian word's first 1..4 bytes, by varint length - 1.
_KEEP = np.array([(1 << (8 * i)) - 1 for i in range(1, 5)], dtype=np.uint32)


def _decode_keys(key_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All varints of a flat byte array -> (unsigned values, 1 + index of each one's last byte).

    Reads each varint as one little-endian 4-byte word, keeps its bytes, then moves the
    7-bit groups together: group i sits at bit 8i and belongs at bit 7i. Keys of valid
    records are below their dim, itself a varint of at most 4 bytes, so longer keys are left
    to the general path. A zero byte put in front acts as the terminator of a "previous"
    varint, so every start is the position after the previous terminator (which is why
    positions come back shifted by 1).
    """
    padded = np.concatenate([np.zeros(1, np.uint8), key_bytes, np.zeros(4, np.uint8)])
    ends = np.flatnonzero(padded[: len(key_bytes) + 1] < 0x80)
    starts = ends[:-1] + 1
    ends = ends[1:]
    if not len(ends):
        return np.empty(0, np.uint8), ends
    lengths = ends - starts
    widest = int(lengths.max()) + 1
    if widest == 1:
        return key_bytes[ends - 1], ends
    if widest > 4:
        raise _Deviates
    # Gathering 4-byte void items at byte offsets ran ~2x faster here than uint32 ones.
    unaligned = np.ndarray(shape=(len(padded) - 3,), dtype="V4", buffer=padded, strides=(1,))
    words = np.take(unaligned, starts).view("<u4")
    words &= np.take(_KEEP, lengths)
    keys = words & np.uint32(0x7F)
    for i in range(1, widest):
        keys |= (words >> np.uint32(i)) & np.uint32(0x7F << (7 * i))
    return keys, ends


class _Deviates(Exception):
    """Internal: the run cannot be decoded here; the caller shrinks it or falls back."""


def decode_sparse_run(
    buf: np.ndarray, pos: int, end: int, feature_dim: int | None, has_labels: bool | None, window: int
) -> SparseRun | None:
    """Decode the leading run of plain sparse records in ``buf[pos:end]`` (``pos`` 4-aligned;
    frames whose header lies within the first ``window`` bytes from ``pos``).

    ``feature_dim``/``has_labels``: what the stream has established so far (None: not yet);
    the run ends before a record that disagrees, so the general path reports it. Returns
    None when the first frame is not such a record.
    """
    decode = _decode_compiled if implementation == "c" else _decode_numpy
    return decode(buf, pos, end, feature_dim, has_labels, window)


def _decode_compiled(buf, pos, end, feature_dim, has_labels, window) -> SparseRun | None:
    """The kernel counts the run, then fills arrays of that size (shorter if a record's keys
    do not fit: the arrays are then cut to the records that were filled)."""
    unknown = -1
    count, _, nnz, dim, labelled = _sparse_kernel.walk(
        buf, pos, end, window, unknown if feature_dim is None else feature_dim,
        unknown if has_labels is None else int(has_labels))
    if not count:
        return None
    data, indices = np.empty(nnz, np.float32), np.empty(nnz, np.int32)
    indptr = np.empty(count + 1, np.int64)
    labels = np.empty(count, np.float32) if labelled else None
    count, nbytes, nnz, _, _ = _sparse_kernel.walk(buf, pos, end, window, dim, int(labelled),
                                                   (data, indices, indptr, labels))
    if not count:
        return None
    return SparseRun(
        count=count,
        nbytes=nbytes,
        data=data[:nnz],
        indices=indices[:nnz],
        indptr=indptr[: count + 1],
        labels=None if labels is None else labels[:count],
        feature_dim=dim,
    )


def _decode_numpy(buf, pos, end, feature_dim, has_labels, window) -> SparseRun | None:
    """All records of the buffer at once, field by field (see the module docstring)."""
    starts, lrec = chain_frames(buf, pos, end, window)
    if not len(starts):
        return None
    data = buf[:end]
    ps = starts + 8  # payload starts
    pe = ps + (lrec & LENGTH_MASK).astype(np.int64)  # payload ends
    n = len(ps)

    # Record.features entry {key: "values", value: Value{tensor}}; nested lengths must add up.
    ok = _byte_at(data, ps) == 0x0A
    length, at, valid = _varint(data, ps + 1)
    entry_end = at + length
    ok &= valid & (entry_end <= pe)
    ok &= (_byte_at(data, at[:, None] + np.arange(8)) == _VALUES_KEY).all(axis=1)
    ok &= _byte_at(data, at + 8) == 0x12
    length, at, valid = _varint(data, at + 9)
    ok &= valid & (at + length == entry_end)
    tag = _byte_at(data, at)
    dtype = _TENSOR_DTYPES.get(int(tag[0]))
    if dtype is None:
        return None
    length, at, valid = _varint(data, at + 1)
    tensor_end = at + length
    ok &= (tag == tag[0]) & valid & (tensor_end == entry_end)

    # Tensor fields in order: values (optional), keys (optional), shape = [dim].
    has_values = _byte_at(data, at) == 0x0A
    vlen, vstart, valid = _varint(data, at + 1)
    ok &= valid | ~has_values
    vlen = np.where(has_values, vlen, 0)
    at = np.where(has_values, vstart + vlen, at)
    has_keys = (_byte_at(data, at) == 0x12) & (at < tensor_end)
    klen, kstart, valid = _varint(data, at + 1)
    ok &= valid | ~has_keys
    klen = np.where(has_keys, klen, 0)
    at = np.where(has_keys, kstart + klen, at)
    ok &= _byte_at(data, at) == 0x1A
    slen, at, valid = _varint(data, at + 1)
    ok &= valid
    dim, shape_end, valid = _varint(data, at)
    ok &= valid & (shape_end == at + slen) & (shape_end == tensor_end)
    nnz = vlen // dtype.itemsize
    ok &= (vlen % dtype.itemsize == 0) & (has_keys | (vlen == 0)) & (dim > 0)
    ok &= dim == (dim[0] if feature_dim is None else feature_dim)

    labelled = entry_end < pe
    ok &= labelled == (labelled[0] if has_labels is None else has_labels)
    labels = None
    if labelled[0]:
        labels, known = _labels(data, entry_end, pe)
        ok &= known

    n = int(np.argmin(ok)) if not ok.all() else n
    while n:
        try:
            return _assemble(data, n, starts, pe, vstart, nnz, kstart, klen, int(dim[0]), labels, dtype)
        except _Deviates as exc:
            n = exc.args[0] if exc.args else 0
    return None


def _labels(data: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label entries occupying ``data[start:end]`` -> (float32 values, whether the layout is known)."""
    prefix = _byte_at(data, start[:, None] + np.arange(_LABEL_PREFIX))
    values = np.zeros(len(start), dtype=np.float32)
    known = np.zeros(len(start), dtype=bool)
    for pattern, dtype in _LABELS:
        hit = (end - start == _LABEL_PREFIX + dtype.itemsize) & (prefix == pattern).all(axis=1)
        if dtype.kind == "u":
            hit &= _byte_at(data, start + _LABEL_PREFIX) < 0x80  # a one-byte varint
        if hit.any():
            values[hit] = _gather_values(data, start[hit] + _LABEL_PREFIX, np.ones(int(hit.sum()), np.int64), dtype)
            known |= hit
    return values, known


def _assemble(data, n, starts, pe, vstart, nnz, kstart, klen, dim, label_values, dtype) -> SparseRun:
    """Gather and check keys and values of the first ``n`` records (structure already checked).

    Raises ``_Deviates(k)`` when record k is the first whose keys do not fit (wrong count,
    key >= dim): the caller retries with the k records before it.
    """
    nnz, kstart, klen = nnz[:n], kstart[:n], klen[:n]
    key_bytes = _gather_bytes(data, kstart, klen)
    keys, key_ends = _decode_keys(key_bytes)
    byte_end = np.cumsum(klen)
    per_record = np.diff(np.searchsorted(key_ends, byte_end, side="right"), prepend=0)
    # A record's key bytes must end with a complete varint and hold one key per value.
    ends_whole = (klen == 0) | (key_bytes[np.maximum(byte_end - 1, 0)] < 0x80) if len(key_bytes) else klen == 0
    bad = (per_record != nnz) | ~ends_whole
    if bad.any():
        raise _Deviates(int(np.argmax(bad)))
    # (A dim beyond the key type's range, e.g. 1-byte keys and dim 1000, leaves nothing to check.)
    out_of_range = keys >= dim if dim <= np.iinfo(keys.dtype).max else np.zeros(0, dtype=bool)
    if out_of_range.any():
        key_record = np.searchsorted(np.cumsum(nnz), int(np.argmax(out_of_range)), side="right")
        raise _Deviates(int(key_record))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(nnz, out=indptr[1:])
    values = _gather_values(data, vstart[:n], nnz, dtype)
    return SparseRun(
        count=n,
        nbytes=int(pe[n - 1] - starts[0] + 3) // 4 * 4,
        data=values,
        indices=keys.astype(np.int32),  # keys < dim < 2**28 (dim is a varint of at most 4 bytes)
        indptr=indptr,
        labels=None if label_values is None else label_values[:n],
        feature_dim=dim,
    )
