"""What several algorithms do across hosts or across epochs, written once.

* :func:`all_reduce`: sum (or max) a set of tensors or arrays over every host in one
  collective (flattened into one float64 buffer on the training device, so NCCL gets CUDA
  tensors and gloo CPU ones), each result back in its input's kind, shape, dtype and device.
* :class:`EarlyStopping`: patience and relative tolerance over a per-epoch metric, with the
  log line the built-ins print when they stop.

torch.distributed is set up by the platform before ``train`` is called; a single-host job
never reaches a collective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def all_reduce(values: Sequence[torch.Tensor | np.ndarray], device: torch.device, op: str = "sum") -> list:
    """``values`` summed (``op="max"``: their maximum) element-wise over all hosts."""
    import torch.distributed as dist

    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}
    tensors = [torch.from_numpy(np.asarray(v)) if isinstance(v, np.ndarray) else v for v in values]
    flat = torch.cat([t.reshape(-1).to(device=device, dtype=torch.float64) for t in tensors])
    dist.all_reduce(flat, op=ops[op])
    out, start = [], 0
    for original, tensor in zip(values, tensors):
        part = flat[start : start + tensor.numel()].view(tensor.shape)
        start += tensor.numel()
        if isinstance(original, np.ndarray):
            out.append(part.cpu().numpy().astype(original.dtype, copy=False))
        else:
            out.append(part.to(device=tensor.device, dtype=tensor.dtype))
    return out


class EarlyStopping:
    """Stop when a per-epoch metric has not improved, relative to its best so far, by more
    than ``tolerance`` for ``patience`` epochs in a row.

    ``higher_is_better``: accuracy-like metrics (True) or losses (False). The first value
    always counts as an improvement. Call :meth:`update` once per epoch; it returns True when
    training should stop, after logging why through ``report``."""

    def __init__(self, report, patience: int, tolerance: float, higher_is_better: bool = True) -> None:
        self.report = report
        self.patience = patience
        self.tolerance = tolerance
        self.sign = 1.0 if higher_is_better else -1.0
        self.best = -math.inf
        self.stale = 0

    def update(self, epoch: int, value: float) -> bool:
        signed = self.sign * value
        if self.best == -math.inf or signed > self.best + self.tolerance * abs(self.best):
            self.best, self.stale = signed, 0
            return False
        self.stale += 1
        if self.stale < self.patience:
            return False
        self.report.info(f"early stopping after epoch {epoch}: no relative improvement above "
                         f"{self.tolerance} for {self.stale} epochs")
        return True
