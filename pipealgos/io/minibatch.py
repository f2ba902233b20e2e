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
        return Minibatch(self.features[start:stop], labels)


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
        features = sp.vstack([sp.csr_matrix(b.features) for b in blocks], format="csr", dtype=np.float32)
    else:
        features = np.concatenate([b.features for b in blocks])
    labels = np.concatenate([b.labels for b in blocks]) if with_labels == {True} else None
    return Minibatch(features, labels)


def rebatch(blocks: Iterable[Minibatch], size: int) -> Iterator[Minibatch]:
    """Cut a stream of blocks of any sizes into minibatches of exactly ``size`` rows
    (the last one may be smaller). Whole blocks pass through without copying."""
    pending: list[Minibatch] = []
    count = 0
    for block in blocks:
        while block.size:
            need = size - count
            if block.size <= need:
                pending.append(block)
                count += block.size
                block = block.slice(0, 0)
            else:
                pending.append(block.slice(0, need))
                count += need
                block = block.slice(need, block.size)
            if count == size:
                yield concat(pending)
                pending, count = [], 0
    if count:
        yield concat(pending)
