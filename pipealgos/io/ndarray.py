"""MXNet's NDArray file format (``mx.nd.save``), read and written without MXNet.

SageMaker's k-means, PCA and LDA containers leave their model as such a file
(``model_algo-1``); linear learner, NTM and FM keep one inside a zip. The layout, confirmed
byte for byte on a real PCA artifact (all little-endian)::

    uint64 0x112 (file magic) | uint64 0 (reserved) | uint64 array count
    per array:  uint32 0xF993FAC9 (NDArray v2 magic) | int32 storage type (0 = dense)
                uint32 ndim | int64 dims[ndim] | int32 dev_type (1 = CPU) | int32 dev_id
                int32 dtype | raw data, C order
    uint64 name count (0 = an unnamed list) | per name: uint64 byte length | UTF-8 bytes

Only dense arrays of the dtypes in :data:`DTYPES` are supported; anything else, and any
truncation or inconsistency, is a :class:`DataError` naming the byte offset.
"""

from __future__ import annotations

import struct

import numpy as np

from .errors import DataError

FILE_MAGIC = 0x112
ARRAY_MAGIC = 0xF993FAC9
DENSE = 0
CPU = 1
# MXNet type flags -> numpy dtypes (mshadow's kFloat32 = 0, kFloat64, kFloat16, kUint8, kInt32, kInt8, kInt64).
DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<f2"), 3: np.dtype("u1"), 4: np.dtype("<i4"),
          5: np.dtype("i1"), 6: np.dtype("<i8")}
_FLAGS = {dtype: flag for flag, dtype in DTYPES.items()}
MAX_NDIM = 32


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data, self.source, self.pos = memoryview(data), source, 0

    def fail(self, problem: str, offset: int | None = None) -> DataError:
        return DataError(problem, source=self.source, offset=self.pos if offset is None else offset,
                         fix="This is not an MXNet NDArray file as SageMaker's built-ins write it")

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise self.fail(f"file ends after {len(self.data)} bytes, inside a header")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def array(self) -> np.ndarray:
        start = self.pos
        magic, storage, ndim = self.take("<IiI")
        if magic != ARRAY_MAGIC:
            raise self.fail(f"array magic 0x{magic:08X} is not 0x{ARRAY_MAGIC:08X}", start)
        if storage != DENSE:
            raise self.fail(f"storage type {storage} is not dense (0): sparse NDArrays are not supported", start)
        if ndim > MAX_NDIM:
            raise self.fail(f"{ndim} dimensions", start)
        shape = tuple(self.take("<q") for _ in range(ndim))
        if any(d < 0 for d in shape):
            raise self.fail(f"negative dimension in shape {shape}", start)
        self.take("<ii")  # the device it was saved from: irrelevant once on disk
        flag = self.take("<i")
        if flag not in DTYPES:
            raise self.fail(f"unknown dtype flag {flag}", start)
        dtype = DTYPES[flag]
        size = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if self.pos + size > len(self.data):
            raise self.fail(f"array of shape {shape} needs {size} bytes, {len(self.data) - self.pos} remain", start)
        values = np.frombuffer(self.data, dtype=dtype, count=size // dtype.itemsize, offset=self.pos)
        self.pos += size
        return values.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def read_ndarrays(data: bytes, source: str = "NDArray file") -> dict[str, np.ndarray] | list[np.ndarray]:
    """The arrays of an NDArray file: a dict when the file names them, else a list in order."""
    reader = _Reader(data, source)
    magic, _reserved, count = reader.take("<QQQ")
    if magic != FILE_MAGIC:
        raise reader.fail(f"file magic 0x{magic:X} is not 0x{FILE_MAGIC:X}", 0)
    if count > len(data):
        raise reader.fail(f"claims {count} arrays", 16)
    arrays = [reader.array() for _ in range(count)]
    names_count = reader.take("<Q")
    if names_count not in (0, count):
        raise reader.fail(f"{names_count} names for {count} arrays")
    names = []
    for _ in range(names_count):
        length = reader.take("<Q")
        if reader.pos + length > len(data):
            raise reader.fail(f"a name of {length} bytes runs past the end of the file")
        try:
            names.append(bytes(reader.data[reader.pos : reader.pos + length]).decode("utf-8"))
        except UnicodeDecodeError:
            raise reader.fail("a name is not UTF-8") from None
        reader.pos += length
    if reader.pos != len(data):
        raise reader.fail(f"{len(data) - reader.pos} bytes follow the last name")
    return dict(zip(names, arrays)) if names else arrays


def write_ndarrays(arrays: dict[str, np.ndarray] | list[np.ndarray]) -> bytes:
    """The bytes ``mx.nd.save`` writes for ``arrays`` (a dict of named arrays, or a list)."""
    named = isinstance(arrays, dict)
    values = list(arrays.values()) if named else list(arrays)
    out = [struct.pack("<QQQ", FILE_MAGIC, 0, len(values))]
    for value in values:
        array = np.ascontiguousarray(value)
        dtype = array.dtype.newbyteorder("<")
        if dtype not in _FLAGS:
            raise ValueError(f"dtype {array.dtype} has no MXNet type flag; use one of "
                             f"{', '.join(str(d) for d in DTYPES.values())}")
        out.append(struct.pack("<IiI", ARRAY_MAGIC, DENSE, array.ndim))
        out.append(struct.pack(f"<{array.ndim}q", *array.shape))
        out.append(struct.pack("<iii", CPU, 0, _FLAGS[dtype]))
        out.append(array.astype(dtype, copy=False).tobytes())
    out.append(struct.pack("<Q", len(values) if named else 0))
    if named:
        for name in arrays:
            encoded = name.encode("utf-8")
            out.append(struct.pack("<Q", len(encoded)) + encoded)
    return b"".join(out)
