"""The model store: pickle-free round trip, and no half model whatever happens while saving."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipealgos.platform import model_store
from pipealgos.platform.model_store import load_model, save_model


def test_round_trip_without_pickle(tmp_path):
    arrays = {"v": np.arange(6, dtype=np.float32).reshape(3, 2), "s": np.ones(2, np.float32)}
    save_model(tmp_path, "pca", {"num_components": 2}, arrays)
    stored = load_model(tmp_path)
    assert stored.algorithm == "pca" and stored.hyperparameters == {"num_components": 2}
    np.testing.assert_array_equal(stored.arrays["v"], arrays["v"])
    with np.load(tmp_path / "model_algo-1.npz", allow_pickle=False) as plain:  # numpy alone reads it
        assert sorted(plain.files) == ["s", "v"]


def test_stopped_between_the_two_moves_leaves_nothing(tmp_path, monkeypatch):
    """SIGTERM (raised as an exception) after the arrays moved but before the manifest did."""
    real_replace = os.replace
    calls = []

    def replace_then_stop(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped")
        real_replace(src, dst)

    monkeypatch.setattr(model_store.os, "replace", replace_then_stop)
    with pytest.raises(KeyboardInterrupt):
        save_model(tmp_path, "pca", {}, {"s": np.ones(1, np.float32)})
    assert list(tmp_path.iterdir()) == []
