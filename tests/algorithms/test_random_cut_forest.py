"""Random cut forest: the reservoir, the trees, the score's definition, and the RCF library.

Both score implementations (numpy, and the compiled kernel where it is built) are checked
against a plain per-point, per-tree walk written from the RCF library's
``ScalarScoreVisitor`` (the definition) and against each other, and the whole method against
``krcf`` (Python bindings of AWS's Rust RCF) on a small shingled series with planted
anomalies: same trees x samples, all points inserted, then every point scored.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from pipealgos.algorithms.random_cut_forest import forest as forest_module
from pipealgos.algorithms.random_cut_forest.forest import Forest, build_forest
from pipealgos.algorithms.random_cut_forest.sampling import Reservoir, merge_reservoirs, tree_samples


# `make test` compiles the kernel (setup.py): without it the "c" cases fail, and
# test_the_score_kernel_is_built says why.
IMPLEMENTATIONS = ["numpy", "c"]


def test_the_score_kernel_is_built():
    assert forest_module._score_kernel is not None, (
        "pipealgos.algorithms.random_cut_forest._score_kernel is not built: install gcc and the Python "
        "headers, then reinstall (`pip install -e .`); `make test` does this")


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request, monkeypatch):
    """Runs the test with each score implementation (the compiled kernel where it is built)."""
    monkeypatch.setattr(forest_module, "implementation", request.param)
    return request.param


def _forest(points: np.ndarray, trees: int, per_tree: int, seed: int) -> Forest:
    rng = np.random.default_rng(seed)
    return build_forest(tree_samples(points, trees, per_tree, rng), rng)


def reference_score(forest: Forest, x: np.ndarray) -> float:
    """The RCF library's score of one point, one tree at a time, leaf to root."""
    total = 0.0
    for root in forest.tree_root:
        node, path = root, [root]
        while forest.left_child[node] >= 0:
            go_left = x[forest.cut_dimension[node]] <= forest.cut_value[node]
            node = forest.left_child[node] if go_left else forest.right_child[node]
            path.append(node)
        tree_mass, leaf_mass, depth = forest.mass[root], forest.mass[node], len(path) - 1
        if np.array_equal(x, forest.box_min[node]):
            score = (1 - leaf_mass / (2 * tree_mass)) / (depth + math.log2(leaf_mass + 1))
            path = []  # converged at the leaf
        else:
            score = 1 / (depth + 1)
            path.pop()
        for depth, node in reversed(list(enumerate(path))):
            low, high = forest.box_min[node].astype(float), forest.box_max[node].astype(float)
            grown = np.maximum(high, x) - np.minimum(low, x)
            growth = grown.sum() - (high - low).sum()
            if growth <= 0:
                break
            p = growth / grown.sum()
            score = p / (depth + 1) + (1 - p) * score
        total += score * math.log2(tree_mass + 1)
    return total / forest.num_trees


def _series_with_anomalies(n: int = 1500, shingle: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n + shingle - 1)
    values = np.sin(2 * np.pi * t / 50) * 10 + rng.normal(scale=0.5, size=len(t))
    spikes = rng.choice(np.arange(100, len(t)), 12, replace=False)
    values[spikes] += rng.choice([-1, 1], 12) * 8
    points = np.lib.stride_tricks.sliding_window_view(values, shingle).astype(np.float32)
    # A shingle is anomalous when it holds a spike.
    labels = np.zeros(len(points), dtype=bool)
    for spike in spikes:
        labels[max(0, spike - shingle + 1) : spike + 1] = True
    return points, labels


# --- the reservoir ---------------------------------------------------------------------------


def test_reservoir_is_uniform_over_a_stream_of_minibatches():
    n, capacity, runs = 60, 10, 3000
    counts = np.zeros(n)
    rng = np.random.default_rng(0)
    for _ in range(runs):
        reservoir = Reservoir(capacity, 1, rng)
        for start in range(0, n, 7):  # minibatches that straddle the end of the fill
            reservoir.add(np.arange(start, min(n, start + 7), dtype=np.float32)[:, None])
        kept = reservoir.sample[:, 0].astype(int)
        assert len(set(kept)) == capacity  # without replacement
        counts[kept] += 1
    expected = runs * capacity / n  # 500; binomial sd ~ 20
    assert np.abs(counts - expected).max() < 5 * math.sqrt(expected), counts


def test_reservoir_densifies_sparse_rows_and_keeps_everything_below_capacity():
    dense = np.arange(12, dtype=np.float32).reshape(4, 3)
    reservoir = Reservoir(10, 3, np.random.default_rng(0))
    reservoir.add(sp.csr_matrix(dense))
    assert reservoir.seen == 4 and np.array_equal(reservoir.sample, dense)


def test_merge_draws_from_hosts_in_proportion_to_their_rows():
    rng = np.random.default_rng(1)
    big, small = np.zeros((100, 1), np.float32), np.ones((100, 1), np.float32)
    merged = np.concatenate([merge_reservoirs([big, small], [9000, 1000], 100, rng) for _ in range(200)])
    assert abs(merged.mean() - 0.1) < 0.01  # a tenth of the rows come from the small host


def test_tree_samples_are_disjoint_when_the_data_suffice_and_shared_otherwise():
    rng = np.random.default_rng(0)
    rows = np.arange(40, dtype=np.float32)[:, None]
    parts = tree_samples(rows, 4, 10, rng)
    assert sorted(np.concatenate(parts)[:, 0]) == list(range(40))
    parts = tree_samples(rows[:15], 4, 10, rng)
    assert [len(p) for p in parts] == [10] * 4 and all(len(np.unique(p)) == 10 for p in parts)


# --- the trees -------------------------------------------------------------------------------


def test_trees_are_well_formed():
    points = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    points[:20] = points[0]  # duplicates end in one leaf
    forest = _forest(points, 3, 100, seed=0)
    internal = forest.left_child >= 0
    for side in (forest.left_child, forest.right_child):
        child = side[internal]
        assert (forest.box_min[child] >= forest.box_min[internal]).all()
        assert (forest.box_max[child] <= forest.box_max[internal]).all()
    assert np.array_equal(forest.mass[internal], forest.mass[forest.left_child[internal]] +
                          forest.mass[forest.right_child[internal]])
    leaves = ~internal
    assert np.array_equal(forest.box_min[leaves], forest.box_max[leaves])  # a leaf is one point
    assert (forest.mass[forest.tree_root] == 100).all()
    # Every cut separates: the left box ends at or below the cut, the right box starts above it.
    dims, cuts = forest.cut_dimension[internal], forest.cut_value[internal]
    nodes = np.flatnonzero(internal)
    assert (forest.box_max[forest.left_child[nodes], dims] <= cuts).all()
    assert (forest.box_min[forest.right_child[nodes], dims] > cuts).all()


def test_a_cut_between_adjacent_float32_values_leaves_both_sides_non_empty():
    low = np.float32(1.0)
    points = np.array([[low], [np.nextafter(low, np.float32(2))]], dtype=np.float32)
    for seed in range(50):
        forest = _forest(points, 1, 2, seed)
        assert sorted(forest.mass[forest.left_child >= 0]) == [2]
        assert forest.cut_value[0] == low


def test_identical_points_make_one_leaf_holding_their_mass(implementation):
    forest = _forest(np.ones((8, 3), np.float32), 2, 4, seed=0)
    assert len(forest.mass) == 2 and list(forest.mass) == [4, 4]
    # A duplicate of the leaf's point: (1 - m/2N)/(0 + log2(m+1)) x log2(N+1), with m = N = 4.
    assert forest.score(np.ones((1, 3), np.float32))[0] == pytest.approx(0.5 / math.log2(5) * math.log2(5))


# --- the score -------------------------------------------------------------------------------


def test_score_equals_the_library_definition(implementation):
    rng = np.random.default_rng(3)
    points = rng.normal(size=(400, 4)).astype(np.float32)
    points[:5] = points[5]
    forest = _forest(points, 5, 64, seed=1)
    queries = np.concatenate([points[:40], rng.normal(size=(40, 4)).astype(np.float32) * 3])
    expected = [reference_score(forest, q) for q in queries]
    np.testing.assert_allclose(forest.score(queries), expected, rtol=1e-5)


def test_both_implementations_give_the_same_scores(monkeypatch):
    rng = np.random.default_rng(4)
    points = rng.normal(size=(2000, 37)).astype(np.float32)  # 37: the partial sums and a tail
    forest = _forest(points, 20, 128, seed=2)
    queries = np.concatenate([points[:300], rng.normal(size=(300, 37)).astype(np.float32) * 2])
    compiled = forest.score(queries)
    monkeypatch.setattr(forest_module, "implementation", "numpy")
    np.testing.assert_allclose(forest.score(queries), compiled, rtol=1e-6)


def test_two_seeds_give_different_forests_and_one_seed_the_same(implementation):
    points, _ = _series_with_anomalies(400)
    a, b, c = (_forest(points, 10, 32, seed).score(points) for seed in (1, 2, 1))
    assert np.array_equal(a, c)
    assert not np.allclose(a, b)


def test_planted_anomalies_rank_like_the_rcf_library(implementation):
    import krcf
    points, labels = _series_with_anomalies()
    trees, per_tree = 100, 128

    def library_scores(seed: int) -> np.ndarray:
        forest = krcf.RandomCutForest({"dimensions": points.shape[1], "shingle_size": 1, "num_trees": trees,
                                       "sample_size": per_tree, "output_after": 1, "random_seed": seed,
                                       "lambda": 0.0})
        for point in points:
            forest.update(point)
        return np.array([forest.score(point) for point in points])

    library = library_scores(7)
    ours = _forest(points, trees, per_tree, seed=7).score(points)
    ceiling = spearmanr(library, library_scores(8))[0]  # the library against itself
    assert spearmanr(ours, library)[0] >= ceiling - 0.05, (spearmanr(ours, library)[0], ceiling)
    assert roc_auc_score(labels, ours) >= roc_auc_score(labels, library) - 0.02
    assert roc_auc_score(labels, ours) > 0.9
