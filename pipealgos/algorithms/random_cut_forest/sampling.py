"""One-pass uniform sampling of the train channel, and the split of the sample into trees.

:class:`Reservoir` keeps a uniform sample without replacement of ``capacity`` rows of a
stream of any length in constant memory (Vitter's algorithm R, one minibatch at a time: row
i, counted from 0, replaces a uniformly drawn slot j <= i when j < capacity; within a
minibatch the later of two rows drawing the same slot wins, as it would one row at a time).
Sparse rows are densified only when they enter the sample.

:func:`merge_reservoirs` combines the hosts' reservoirs into one uniform sample of the union:
how many rows come from each host is a multivariate hypergeometric draw over the hosts' row
counts, and each host's share is a uniform subset of its (uniform) reservoir.

:func:`tree_samples` splits the sample into ``num_trees`` disjoint parts of
``num_samples_per_tree`` when the data hold enough rows. With fewer rows than
``num_trees x num_samples_per_tree``, each tree draws its own ``num_samples_per_tree`` rows
(or all of them, when there are fewer) from what there is, so trees share rows.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pipealgos.io.minibatch import Features


class Reservoir:
    """A uniform sample of at most ``capacity`` rows of everything :meth:`add` has seen."""

    def __init__(self, capacity: int, feature_dim: int, rng: np.random.Generator) -> None:
        self.capacity = capacity
        self.rows = np.empty((capacity, feature_dim), dtype=np.float32)
        self.seen = 0
        self._rng = rng

    @property
    def sample(self) -> np.ndarray:
        return self.rows[: min(self.seen, self.capacity)]

    def add(self, features: Features) -> None:
        n = features.shape[0]
        filling = max(0, min(self.capacity - self.seen, n))
        if filling:
            self.rows[self.seen : self.seen + filling] = _dense(features[:filling])
        index = np.arange(self.seen + filling, self.seen + n)  # global indices of the rows past the fill
        if len(index):
            slot = (self._rng.random(len(index)) * (index + 1)).astype(np.int64)
            taken = np.flatnonzero(slot < self.capacity)
            # The last row drawing a slot is the one that stays in it.
            slots_reversed, first_in_reverse = np.unique(slot[taken][::-1], return_index=True)
            winners = taken[::-1][first_in_reverse]
            if len(winners):
                self.rows[slots_reversed] = _dense(features[filling + winners])
        self.seen += n


def _dense(features: Features) -> np.ndarray:
    return features.toarray() if sp.issparse(features) else np.asarray(features, dtype=np.float32)


def merge_reservoirs(samples: list[np.ndarray], seen: list[int], capacity: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform sample of up to ``capacity`` rows of the hosts' data together, from each
    host's uniform sample (``samples[h]``, of ``min(seen[h], capacity)`` rows)."""
    total = sum(seen)
    take = min(capacity, total)
    counts = rng.multivariate_hypergeometric(np.asarray(seen, dtype=np.int64), take)
    parts = [sample[rng.choice(len(sample), count, replace=False)] for sample, count in zip(samples, counts)]
    merged = np.concatenate(parts) if parts else np.empty((0, 0), dtype=np.float32)
    return merged[rng.permutation(len(merged))]


def tree_samples(sample: np.ndarray, num_trees: int, per_tree: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The rows of each tree (see the module docstring)."""
    if len(sample) >= num_trees * per_tree:
        shuffled = sample[rng.permutation(len(sample))[: num_trees * per_tree]]
        return list(shuffled.reshape(num_trees, per_tree, -1))
    size = min(per_tree, len(sample))
    return [sample[rng.choice(len(sample), size, replace=False)] for _ in range(num_trees)]
