"""The device feed: decoded minibatches to the training device, the copy of the next one
overlapping the compute of the current one.

``device_batches(minibatches, device, ...)`` turns host :class:`~pipealgos.io.Minibatch` es
(float32 numpy or scipy CSR, from the channel reader) into :class:`DeviceBatch` es whose
``features`` / ``labels`` are torch tensors on ``device`` and whose ``rows`` is a host int, so
a training loop counts rows without reading anything back from the device.

* **CPU**: nothing is copied. ``features`` is a ``torch.from_numpy`` view, made only when the
  algorithm first asks for it (an algorithm that computes on the host minibatch itself, such
  as PCA's scipy path for sparse rows, pays nothing); ``host`` is the minibatch itself.
* **CUDA** (:class:`_CudaFeed`): each minibatch (or stack, below) is written once into
  page-locked host memory, copied on a side stream with ``non_blocking=True``, and an event
  marks the copy's end. The feed stays one item ahead: item n + 1 is staged and its copy
  enqueued before item n is handed out, so the side stream's copy of n + 1 runs while the
  compute stream works on n (double buffering). Handing an item out makes the compute stream
  wait for its event (a device-side wait: the host does not block) and calls
  ``record_stream`` on its tensors, so the caching allocator does not give their memory to
  the side stream's next allocations before the compute stream is done with them. The pinned
  host blocks come from torch's caching host allocator, which records an event on every
  ``non_blocking`` copy out of them and does not reuse a block before that copy finished, so a
  staged buffer may be dropped as soon as its copy is enqueued.
* **Sparse** minibatches cross as their CSR arrays (int64 row offsets, int64 columns, float32
  values) and become a sparse CSR tensor on the device when ``keep_sparse``; never densified
  on the host. Without ``keep_sparse`` (an algorithm that wants dense rows) they are
  densified on the host first, as :func:`~pipealgos.algorithms.tensors.to_torch` does.
* **Stacking** (``rows_per_launch``): on CUDA, consecutive dense minibatches are written side
  by side into one pinned buffer until it holds at least ``rows_per_launch`` rows, and cross
  (and are computed on) as one item: one copy and one set of kernel launches instead of many
  small ones. Only for computations whose result does not depend on the minibatch size (sums,
  assignment to fixed centers). Sparse minibatches are not stacked. On the CPU it is ignored:
  stacking would copy, and the CPU gains nothing from larger products at these sizes.

:func:`computes_on_host` is the one place that decides whether an algorithm may take its
host shortcuts (numpy argmin, scipy sums: faster on the CPU) or must stay on tensors with no
read-back per minibatch. The loop-structure tests replace it to run the device loops on CPU
tensors while counting host reads (tests/algorithms/test_feed.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

import numpy as np
import scipy.sparse as sp
import torch

from pipealgos.io import Minibatch

from .tensors import to_torch


def computes_on_host(device: torch.device) -> bool:
    """Whether work on ``device`` may read tensors back with ``.numpy()`` at no cost (the CPU)."""
    return device.type == "cpu"


class DeviceBatch:
    """One item of the feed: ``rows`` (host int), ``features`` ((rows, d) float32 tensor, or a
    sparse CSR tensor), ``labels`` ((rows,) float32 tensor or None) on the training device, and
    ``host``: the minibatch it came from on the CPU (None on a device)."""

    __slots__ = ("rows", "host", "_features", "_labels", "_keep_sparse")

    def __init__(self, rows: int, features: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 host: Minibatch | None = None, keep_sparse: bool = False) -> None:
        self.rows, self.host = rows, host
        self._features, self._labels, self._keep_sparse = features, labels, keep_sparse

    @property
    def features(self) -> torch.Tensor:
        if self._features is None:  # a CPU item: the view is made on first use
            self._features = to_torch(self.host.features, torch.device("cpu"), keep_sparse=self._keep_sparse)
        return self._features

    @property
    def labels(self) -> torch.Tensor | None:
        if self._labels is None and self.host is not None and self.host.labels is not None:
            self._labels = torch.from_numpy(self.host.labels)
        return self._labels


def device_batches(minibatches: Iterable[Minibatch], device: torch.device, keep_sparse: bool = False,
                   rows_per_launch: int | None = None) -> Iterator[DeviceBatch]:
    """The minibatches as :class:`DeviceBatch` es on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        return _CudaFeed(device, keep_sparse)(stacked(minibatches, rows_per_launch))
    if device.type != "cpu":
        raise ValueError(f"no device feed for {device}: cpu or cuda")
    return (DeviceBatch(batch.size, host=batch, keep_sparse=keep_sparse) for batch in minibatches)


def array_to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array an algorithm made (PCA's random signs) on ``device``: a view on the CPU; on
    CUDA through pinned memory with a ``non_blocking`` copy on the current stream, which
    orders it before the work that uses it, without the host waiting."""
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def stacked(minibatches: Iterable[Minibatch], rows_per_launch: int | None) -> Iterator[list[Minibatch]]:
    """Consecutive minibatches grouped until a group holds ``rows_per_launch`` rows (one per
    group when None); a sparse minibatch is always a group of its own."""
    group: list[Minibatch] = []
    rows = 0
    for batch in minibatches:
        if batch.is_sparse or not rows_per_launch:
            if group:
                yield group
                group, rows = [], 0
            yield [batch]
            continue
        group.append(batch)
        rows += batch.size
        if rows >= rows_per_launch:
            yield group
            group, rows = [], 0
    if group:
        yield group


def stage(group: list[Minibatch], keep_sparse: bool, pin: bool) -> tuple[int, list[torch.Tensor], tuple | None]:
    """A group of minibatches written once into (pinned, with ``pin``) host tensors: (rows,
    [features..., labels?], sparse shape or None). Dense: one (rows, d) float32 tensor holding
    the group side by side. Sparse (a group of one, :func:`stacked`): its CSR arrays, int64
    row offsets and columns and float32 values; densified first without ``keep_sparse``."""
    rows = sum(batch.size for batch in group)
    first = group[0]
    features = first.features
    if sp.issparse(features) and keep_sparse:
        arrays = [features.indptr.astype(np.int64, copy=False), features.indices.astype(np.int64, copy=False),
                  np.asarray(features.data, dtype=np.float32)]
        tensors = [_host_concat([array], array.shape, pin) for array in arrays]
        shape = features.shape
    else:
        parts = [batch.dense() for batch in group]
        tensors = [_host_concat(parts, (rows, first.feature_dim), pin)]
        shape = None
    if first.labels is not None:
        tensors.append(_host_concat([batch.labels for batch in group], (rows,), pin))
    return rows, tensors, shape


def _host_concat(parts: list[np.ndarray], shape: tuple[int, ...], pin: bool) -> torch.Tensor:
    """``parts`` (one dtype) concatenated along rows into one new host tensor of that dtype,
    page-locked with ``pin``: the one host copy a minibatch makes on its way to the device."""
    tensor = torch.from_numpy(np.empty(0, dtype=parts[0].dtype)).new_empty(shape, pin_memory=pin)
    np.concatenate(parts, out=tensor.numpy())
    return tensor


def sparse_from_arrays(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple) -> torch.Tensor:
    """A sparse CSR tensor over arrays already on their device (no copy, no invariant check:
    the decoder built them sorted and in range)."""
    with warnings.catch_warnings():  # torch calls its CSR layout "beta" on every construction
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)


class _CudaFeed:
    """Pinned staging, side-stream copies, one item ahead (the module docstring's CUDA part)."""

    def __init__(self, device: torch.device, keep_sparse: bool) -> None:
        self.device = device
        self.keep_sparse = keep_sparse
        self.copy_stream = torch.cuda.Stream(device=device)

    def __call__(self, groups: Iterator[list[Minibatch]]) -> Iterator[DeviceBatch]:
        ahead = None
        for group in groups:
            staged = self._upload(group)
            if ahead is not None:
                yield self._hand_out(*ahead)
            ahead = staged
        if ahead is not None:
            yield self._hand_out(*ahead)

    def _upload(self, group: list[Minibatch]):
        """Stage ``group`` and enqueue its copy on the side stream; nothing waits for it here."""
        rows, host_tensors, sparse_shape = stage(group, self.keep_sparse, pin=True)
        has_labels = group[0].labels is not None
        with torch.cuda.stream(self.copy_stream):
            on_device = [tensor.to(self.device, non_blocking=True) for tensor in host_tensors]
            copied = torch.cuda.Event()
            copied.record(self.copy_stream)
        return rows, on_device, sparse_shape, has_labels, copied

    def _hand_out(self, rows: int, on_device: list[torch.Tensor], sparse_shape, has_labels: bool,
                  copied: torch.cuda.Event) -> DeviceBatch:
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(copied)
        for tensor in on_device:
            tensor.record_stream(compute)
        labels = on_device.pop() if has_labels else None
        features = sparse_from_arrays(*on_device, sparse_shape) if sparse_shape else on_device[0]
        return DeviceBatch(rows, features, labels)
