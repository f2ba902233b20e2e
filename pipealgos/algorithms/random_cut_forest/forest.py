"""The forest: trees built from samples, stored as flat arrays, scored all at once.

**Build** (:func:`build_forest`). Each tree's sample is cut recursively, every tree of the
forest one level at a time: a node's bounding box is the min and max of its points; its cut
dimension is drawn with probability proportional to that dimension's extent, and the cut
value uniformly inside the extent (the random cut of Guha et al. 2016, as the RCF library
draws it: one uniform number r over the summed extents, the dimension whose cumulative
extent first exceeds r, the cut at its minimum plus what is left of r). Points with
``x[dim] <= cut`` go left. A node whose box is a single point is a leaf; its ``mass`` counts
the duplicates it holds. Cuts are drawn in float64 and rounded to float32 (the points'
type); a cut that rounds up to the box's maximum is moved one float32 step down, so both
children are always non-empty.

**Storage** (:class:`Forest`). All trees share one node numbering (level by level), held in
flat arrays: ``cut_dimension`` (-1 for a leaf), ``cut_value``, ``left_child`` /
``right_child`` (-1 for a leaf), ``mass`` (points under the node), ``box_min`` /
``box_max`` (nodes x feature_dim; a leaf's box is its point) and ``tree_root``.

**Score** (:meth:`Forest.score`), the anomaly score of the RCF library
(aws/random-cut-forest-by-aws, ``AnomalyScoreVisitor``): x falls to a leaf of depth h (root
depth 0). There the score is 1/(h+1), or, when x equals the leaf's point,
(1 - m/(2N)) / (h + log2(m+1)) (m the leaf's mass, N the tree's) and the walk stops. Then,
going up, at each ancestor of depth h' with box B, p = (growth of B's summed extents when x
is added) / (summed extents of B grown by x) is the probability that a random cut of the
grown box separates x; score <- p/(h'+1) + (1-p)·score. When p = 0 (x inside B) the walk
stops: every box above contains B. The tree's score is multiplied by log2(N+1) and the
forest's score is the mean over trees.

Two implementations of the same arithmetic (``implementation`` says which one runs):

* ``"c"``: the compiled kernel ``_score_kernel.c`` (built by ``setup.py`` where a C compiler
  is present) walks each (point, tree) pair down and up, tree by tree, so that the tree's
  boxes stay in cache while every point of the request walks it.
* ``"numpy"``: vectorised over (point, tree) pairs: one array step per tree level going down
  (scalar comparisons), then one per level going up over the pairs still walking (box
  gathers); points are scored in chunks so that the pairs' working set stays in cache.
  About 10x slower on one core (``benchmarks/rcf.py``).

Both sum a box distance in float32 in numpy's order (8 strided partial sums), so they give
the same scores (the kernel adds the trees up one by one, numpy pairwise: the float32
results may differ in the last place).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

try:  # built by setup.py where a C compiler is present; else the numpy version (same scores)
    from . import _score_kernel
except ImportError:
    _score_kernel = None

implementation = "numpy" if _score_kernel is None else "c"  # tests set "numpy" to run the numpy version
ARRAY_DTYPES = {"tree_root": np.int32, "cut_dimension": np.int32, "cut_value": np.float32, "left_child": np.int32,
                "right_child": np.int32, "mass": np.int32, "box_min": np.float32, "box_max": np.float32}
ARRAY_NAMES = tuple(ARRAY_DTYPES)  # the model's stored arrays
POINTS_PER_CHUNK = 256  # points scored together: 256 x 100 trees of 48-float boxes stay in L2/L3


@dataclass
class Forest:
    """Trees as flat arrays (see the module docstring). ``parent``, ``depth``, ``extent_sum``
    and ``tree_mass`` are derived from the stored arrays (:meth:`derive`)."""

    tree_root: np.ndarray  # (trees,) int32
    cut_dimension: np.ndarray  # (nodes,) int32, -1 at leaves
    cut_value: np.ndarray  # (nodes,) float32
    left_child: np.ndarray  # (nodes,) int32, -1 at leaves
    right_child: np.ndarray  # (nodes,) int32, -1 at leaves
    mass: np.ndarray  # (nodes,) int32
    box_min: np.ndarray  # (nodes, feature_dim) float32
    box_max: np.ndarray  # (nodes, feature_dim) float32
    parent: np.ndarray = field(init=False, repr=False)
    depth: np.ndarray = field(init=False, repr=False)
    extent_sum: np.ndarray = field(init=False, repr=False)  # Σ_d (max - min) per node, float64
    boxes: np.ndarray = field(init=False, repr=False)  # (nodes, 2, feature_dim): min and max side by side
    tree_mass: np.ndarray = field(init=False, repr=False)  # N per tree, aligned with tree_root
    max_depth: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name, dtype in ARRAY_DTYPES.items():  # a model file's arrays, whatever it stored
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))
        self.derive()

    @property
    def feature_dim(self) -> int:
        return self.box_min.shape[1]

    @property
    def num_trees(self) -> int:
        return len(self.tree_root)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAY_NAMES}

    def derive(self) -> None:
        """Parent, depth, summed extents and tree masses from the stored arrays; checks that the
        arrays describe trees (a damaged or foreign model file fails here, not while scoring)."""
        nodes = len(self.cut_dimension)
        internal = np.flatnonzero(self.left_child >= 0)
        children = np.concatenate([self.left_child[internal], self.right_child[internal]])
        if (children < 0).any() or (children >= nodes).any() or len(np.unique(children)) != len(children):
            raise ValueError("random cut forest model: child indices do not describe trees")
        self.parent = np.full(nodes, -1, dtype=np.int32)
        self.parent[children] = np.concatenate([internal, internal])
        if (self.parent[self.tree_root] != -1).any() or (self.parent == -1).sum() != len(self.tree_root):
            raise ValueError("random cut forest model: tree roots do not match the child indices")
        self.depth = np.zeros(nodes, dtype=np.int32)
        level, current = 0, self.tree_root.astype(np.int64)
        while len(current):
            self.depth[current] = level
            current = current[self.left_child[current] >= 0]
            current = np.concatenate([self.left_child[current], self.right_child[current]])
            level += 1
        self.max_depth = level - 1
        self.extent_sum = (self.box_max.astype(np.float64) - self.box_min).sum(axis=1)
        self.boxes = np.stack([self.box_min, self.box_max], axis=1)
        self.tree_mass = self.mass[self.tree_root].astype(np.float64)

    def score(self, x: np.ndarray) -> np.ndarray:
        """The forest's anomaly score of each row of ``x`` (float32, finite, feature_dim wide)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if implementation == "c":
            total = np.empty(len(x), dtype=np.float64)
            _score_kernel.score(x, total, self.tree_root, self.cut_dimension, self.cut_value, self.left_child,
                                self.right_child, self.mass, self.boxes, self.parent, self.extent_sum, self.depth)
            return (total / self.num_trees).astype(np.float32)
        scores = np.empty(len(x), dtype=np.float64)
        for start in range(0, len(x), POINTS_PER_CHUNK):
            chunk = x[start : start + POINTS_PER_CHUNK]
            scores[start : start + len(chunk)] = self._score_chunk(chunk)
        return scores.astype(np.float32)

    def _descend(self, x: np.ndarray) -> np.ndarray:
        """(points, trees) leaf index where each point falls in each tree."""
        node = np.broadcast_to(self.tree_root, (len(x), self.num_trees)).astype(np.int64)
        rows = np.arange(len(x))[:, None]
        for _ in range(self.max_depth):
            dim = self.cut_dimension[node]
            internal = dim >= 0
            if not internal.any():
                break
            goes_left = x[rows, np.maximum(dim, 0)] <= self.cut_value[node]
            child = np.where(goes_left, self.left_child[node], self.right_child[node])
            node = np.where(internal, child, node)
        return node

    def _score_chunk(self, x: np.ndarray) -> np.ndarray:
        leaf = self._descend(x).ravel()  # pairs in (point, tree) order
        point = np.repeat(np.arange(len(x)), self.num_trees)
        tree_mass = np.tile(self.tree_mass, len(x))
        score, walking = self._leaf_scores(x, point, leaf, tree_mass)
        self._walk_up(x, point, np.flatnonzero(walking), leaf[walking], score)
        score *= np.log2(tree_mass + 1.0)
        return score.reshape(len(x), self.num_trees).mean(axis=1)

    def _walk_up(self, x: np.ndarray, point: np.ndarray, pair: np.ndarray, node: np.ndarray,
                 score: np.ndarray) -> None:
        """Update ``score[pair]`` going up from each pair's leaf ``node`` (module docstring), one
        tree level at a time for all pairs still walking."""
        while len(pair):
            node = self.parent[node]
            keep = node >= 0
            pair, node = pair[keep], node[keep]
            growth = self._box_growth(x[point[pair]], node)
            outside = growth > 0
            pair, node, growth = pair[outside], node[outside], growth[outside]
            separation = growth / (self.extent_sum[node] + growth)
            score[pair] = separation / (self.depth[node] + 1.0) + (1.0 - separation) * score[pair]

    def _box_growth(self, rows: np.ndarray, node: np.ndarray) -> np.ndarray:
        """Σ_d distance from each row to its node's box (0 inside): by how much the box's summed
        extents grow when the row is added. Only one of min - x and x - max can be positive."""
        boxes = self.boxes[node]  # one gather of (min, max) per pair
        below = np.subtract(boxes[:, 0], rows, out=boxes[:, 0])
        above = np.subtract(rows, boxes[:, 1], out=boxes[:, 1])
        np.maximum(below, above, out=below)
        np.maximum(below, 0, out=below)
        return below.sum(axis=1).astype(np.float64)

    def _leaf_scores(self, x: np.ndarray, point: np.ndarray, leaf: np.ndarray,
                     tree_mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each pair's score at its leaf, and whether its walk goes on (x is not the leaf's point)."""
        depth = self.depth[leaf].astype(np.float64)
        seen = (x[point] == self.box_min[leaf]).all(axis=1)
        leaf_mass = self.mass[leaf].astype(np.float64)
        score = np.where(seen, (1.0 - leaf_mass / (2.0 * tree_mass)) / (depth + np.log2(leaf_mass + 1.0)),
                         1.0 / (depth + 1.0))
        return score, ~seen


def build_forest(samples: list[np.ndarray], rng: np.random.Generator) -> Forest:
    """One tree per float32 array of sample points (each (m_t, feature_dim), m_t >= 1)."""
    points = np.concatenate(samples)
    sizes = np.array([len(s) for s in samples], dtype=np.int64)
    builder = _LevelBuilder(points, rng)
    roots = builder.add_nodes(np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes, parents=None)
    while builder.grow():
        pass
    return builder.forest(roots)


class _LevelBuilder:
    """Cuts every open node of every tree once per :meth:`grow` call.

    ``order`` lists point indices so that each node's points are contiguous; an open node is
    a segment (start, size) of it whose box is not a single point."""

    def __init__(self, points: np.ndarray, rng: np.random.Generator) -> None:
        self.points, self.rng = points, rng
        self.order = np.arange(len(points))
        self.cut_dimension: list[np.ndarray] = []
        self.cut_value: list[np.ndarray] = []
        self.left_child: list[np.ndarray] = []
        self.right_child: list[np.ndarray] = []
        self.mass: list[np.ndarray] = []
        self.box_min: list[np.ndarray] = []
        self.box_max: list[np.ndarray] = []
        self.node_count = 0
        self.open: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # node ids, starts, sizes

    def add_nodes(self, starts: np.ndarray, sizes: np.ndarray, parents: np.ndarray | None) -> np.ndarray:
        """New nodes for the segments; their boxes; the ones with extent become open."""
        ids = np.arange(self.node_count, self.node_count + len(starts), dtype=np.int64)
        self.node_count += len(starts)
        segment_points = self.points[self.order[_ranges(starts, sizes)]]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        low = np.minimum.reduceat(segment_points, offsets, axis=0)
        high = np.maximum.reduceat(segment_points, offsets, axis=0)
        self.box_min.append(low)
        self.box_max.append(high)
        self.mass.append(sizes.astype(np.int32))
        self.cut_dimension.append(np.full(len(ids), -1, dtype=np.int32))
        self.cut_value.append(np.zeros(len(ids), dtype=np.float32))
        self.left_child.append(np.full(len(ids), -1, dtype=np.int32))
        self.right_child.append(np.full(len(ids), -1, dtype=np.int32))
        has_extent = (high > low).any(axis=1)
        self.open = (ids[has_extent], starts[has_extent], sizes[has_extent])
        return ids

    def grow(self) -> bool:
        """Cut the open nodes; False when none is left."""
        ids, starts, sizes = self.open
        if not len(ids):
            return False
        level = len(self.box_min) - 1
        first = self._level_offset(level)
        low, high = self.box_min[level][ids - first], self.box_max[level][ids - first]
        dims, cuts = self._draw_cuts(low, high)
        segment = np.repeat(np.arange(len(ids)), sizes)
        positions = _ranges(starts, sizes)
        members = self.order[positions]
        goes_left = self.points[members, dims[segment]] <= cuts[segment]
        # Stable partition of each segment: its left points first, then its right points.
        regrouped = np.lexsort((~goes_left, segment))
        self.order[positions] = members[regrouped]
        left_sizes = np.bincount(segment, weights=goes_left, minlength=len(ids)).astype(np.int64)
        child_starts = np.stack([starts, starts + left_sizes], axis=1).ravel()
        child_sizes = np.stack([left_sizes, sizes - left_sizes], axis=1).ravel()
        self.cut_dimension[level][ids - first] = dims
        self.cut_value[level][ids - first] = cuts
        children = self.add_nodes(child_starts, child_sizes, ids)
        self.left_child[level][ids - first] = children[0::2]
        self.right_child[level][ids - first] = children[1::2]
        return True

    def _level_offset(self, level: int) -> int:
        return sum(len(m) for m in self.mass[:level])

    def _draw_cuts(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per box: the cut dimension (probability ∝ extent) and a float32 cut in [min, max)."""
        extent = high.astype(np.float64) - low
        cumulative = np.cumsum(extent, axis=1)
        r = self.rng.random(len(low)) * cumulative[:, -1]
        dims = (cumulative <= r[:, None]).sum(axis=1)
        dims = np.minimum(dims, extent.shape[1] - 1)
        rows = np.arange(len(low))
        before = cumulative[rows, dims] - extent[rows, dims]
        cuts = (low[rows, dims] + (r - before)).astype(np.float32)
        top = high[rows, dims]
        # Rounding to float32 may reach the maximum, which would leave the right child empty.
        cuts = np.where(cuts >= top, np.nextafter(top, np.float32(-np.inf)), cuts)
        return dims.astype(np.int32), np.maximum(cuts, low[rows, dims])

    def forest(self, roots: np.ndarray) -> Forest:
        return Forest(
            tree_root=roots.astype(np.int32),
            cut_dimension=np.concatenate(self.cut_dimension), cut_value=np.concatenate(self.cut_value),
            left_child=np.concatenate(self.left_child), right_child=np.concatenate(self.right_child),
            mass=np.concatenate(self.mass), box_min=np.concatenate(self.box_min),
            box_max=np.concatenate(self.box_max))


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The concatenation of arange(s, s + n) for each segment, without a Python loop."""
    total = int(sizes.sum())
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    return np.arange(total) + offsets
