"""Minibatches: what every algorithm consumes, and how blocks of rows become them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

Features = np.ndarray | sp.csr_matrix

#: The most features a record may declare (the largest int32): a column index then fits the
#: int32 indices scipy keeps and the fast decoding paths produce, and no product of shape
#: dimensions wraps unnoticed. The server refuses wider request records the same way.
MAX_FEATURE_DIM = 2**31 - 1


@dataclass
class Minibatch:
    """``features``: float32 ``(n, feature_dim)``, a numpy array (dense) or scipy CSR (sparse).
    ``labels``: float32 ``(n,)`` or None when the records carry no label."""

    features: Features
    labels: np.ndarray | None = None

    @property
    def size(self) -> int:
        return self.features.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.features.shape[1]

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.features)

    def dense(self) -> np.ndarray:
        """Features as a dense float32 array (densifies sparse input)."""
        if self.is_sparse:
            return self.features.toarray()
        return self.features

    def slice(self, start: int, stop: int) -> "Minibatch":
        labels = None if self.labels is None else self.labels[start:stop]
        if self.is_sparse:  # scipy's row slicing costs ~50 µs of checks; a row range needs none
            return Minibatch(_csr_rows(self.features, start, stop), labels)
        return Minibatch(self.features[start:stop], labels)


def _csr_rows(features: sp.csr_matrix, start: int, stop: int) -> sp.csr_matrix:
    """Rows ``start:stop`` (0 <= start, clipped like a Python slice) of a CSR matrix, sharing
    its data and indices."""
    stop = min(stop, features.shape[0])
    start = min(start, stop)
    first, last = features.indptr[start], features.indptr[stop]
    return _csr(features.data[first:last], features.indices[first:last], features.indptr[start:stop + 1] - first,
                features.shape[1], features.has_sorted_indices)


def _csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, feature_dim: int,
         sorted_indices: bool) -> sp.csr_matrix:
    """A CSR matrix of parts known to be valid, keeping their sorted-indices flag: scipy's
    constructor still picks the index dtype (as :func:`sorted_csr` gets it) and checks the
    structure cheaply, but no indices are sorted or scanned again."""
    matrix = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, feature_dim), copy=False)
    matrix.has_sorted_indices = sorted_indices
    return matrix


def first_nonfinite_row(features: Features) -> int | None:
    """Index of the first row holding NaN or infinity, or None when every value is finite.

    ``features``: a dense array (2-D, or 1-D with one value per row such as labels) or a scipy
    CSR matrix (only its stored values can be non-finite). Call it on the values as they will
    be used, after any float32 cast: a float64 value beyond float32's range (1e40) is finite
    before the cast and infinite after it.
    """
    values = features.data if sp.issparse(features) else np.asarray(features)
    # A sum is finite unless some value is NaN/inf (or it overflows: then look closer); one
    # pass without a temporary, so the common all-finite case stays cheap.
    with np.errstate(over="ignore", invalid="ignore"):
        total = values.sum()
    if np.isfinite(total):
        return None
    finite = np.isfinite(values)
    if finite.all():
        return None
    if sp.issparse(features):
        position = int(np.argmin(finite))
        return int(np.searchsorted(features.indptr, position, side="right") - 1)
    return int(np.argmin(finite.reshape(len(values), -1).all(axis=1)))


def sorted_csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n: int, feature_dim: int) -> sp.csr_matrix:
    """The one way sparse blocks are built (the decoder's fast and general paths, ``serve``
    requests), so that their index dtypes and order agree: CSR with sorted indices."""
    features = sp.csr_matrix((data, indices, indptr), shape=(n, feature_dim))
    features.sort_indices()
    return features


def rows_to_csr(values: list[np.ndarray], keys: list[np.ndarray | None], feature_dim: int,
                sum_duplicates: bool = False) -> sp.csr_matrix:
    """Rows -> one float32 CSR matrix of ``len(values)`` rows, indices sorted within each row.

    Row ``i`` holds ``values[i]`` at columns ``keys[i]``, or, where ``keys[i]`` is None, is the
    dense row ``values[i]`` (its non-zeros kept). Repeated keys in a row stay separate entries
    unless ``sum_duplicates``, which adds them up. Needs at least one row.
    """
    indptr = np.zeros(len(values) + 1, dtype=np.int64)
    cols, data = [], []
    for i, (row, row_keys) in enumerate(zip(values, keys)):
        if row_keys is None:
            row_keys = np.flatnonzero(row)
            row = row[row_keys]
        cols.append(row_keys)
        data.append(row)
        indptr[i + 1] = indptr[i] + len(row_keys)
    matrix = sorted_csr(np.concatenate(data).astype(np.float32, copy=False),
                        np.concatenate(cols).astype(np.int64, copy=False), indptr, len(values), feature_dim)
    if sum_duplicates:
        matrix.sum_duplicates()
    return matrix


def concat(blocks: list[Minibatch]) -> Minibatch:
    """Stack blocks row-wise; sparse if any block is sparse. Labels must agree in presence."""
    if len(blocks) == 1:
        return blocks[0]
    with_labels = {b.labels is not None for b in blocks}
    if len(with_labels) > 1:
        raise ValueError("some records carry a label and others do not")
    if any(b.is_sparse for b in blocks):
        features = _stack_csr([b.features if b.is_sparse else sp.csr_matrix(b.features) for b in blocks])
    else:
        features = np.concatenate([b.features for b in blocks])
    labels = np.concatenate([b.labels for b in blocks]) if with_labels == {True} else None
    return Minibatch(features, labels)


def _stack_csr(parts: list[sp.csr_matrix]) -> sp.csr_matrix:
    """CSR matrices of one width stacked row-wise, float32 (``sp.vstack`` without its
    per-part conversions and checks: ~10x faster for minibatch-sized parts)."""
    offsets = np.cumsum([0] + [part.nnz for part in parts[:-1]])
    indptr = np.concatenate([[0]] + [part.indptr[1:] + offset for part, offset in zip(parts, offsets)])
    return _csr(np.concatenate([part.data for part in parts]).astype(np.float32, copy=False),
                np.concatenate([part.indices for part in parts]), indptr, parts[0].shape[1],
                all(part.has_sorted_indices for part in parts))


def rebatch(blocks: Iterable[Minibatch], size: int) -> Iterator[Minibatch]:
    """Cut a stream of blocks of any sizes into minibatches of exactly ``size`` rows
    (the last one may be smaller). Whole blocks pass through without copying; a block is cut
    into views of row ranges, never copied remainder by remainder."""
    pending: list[Minibatch] = []
    count = 0
    for block in blocks:
        start = 0
        while start < block.size:
            take = min(size - count, block.size - start)
            pending.append(block if take == block.size else block.slice(start, start + take))
            start += take
            count += take
            if count == size:
                yield concat(pending)
                pending, count = [], 0
    if count:
        yield concat(pending)
