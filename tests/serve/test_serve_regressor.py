"""A model whose predict returns only some declared outputs: a linear-learner regressor answers
``{"predictions": [{"score": ...}]}``, without ``predicted_label``, in every format."""

from __future__ import annotations

import io
import json

import numpy as np
from mlroot import make_ml_root, recordio_bytes, write_channel_files

from pipealgos.io.protobuf import parse_record
from pipealgos.io.recordio import iter_records
from pipealgos.platform.config import MLRoot
from pipealgos.platform.model_store import load_model
from pipealgos.platform.registry import get_algorithm
from pipealgos.platform.train import run_training
from pipealgos.serve.app import create_app


def test_regressor_serves_score_only(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 3).astype(np.float32)
    root = make_ml_root(tmp_path, {"predictor_type": "regressor", "feature_dim": 3, "epochs": 2, "num_models": 2,
                                   "mini_batch_size": 50}, {"train": {"TrainingInputMode": "File"}})
    write_channel_files(root, "train", [recordio_bytes(x, y)])
    assert run_training(MLRoot(root), "linear-learner") == 0
    stored = load_model(root / "model")
    expected = get_algorithm("linear-learner").model_type.from_arrays(stored.arrays, stored.hyperparameters).predict(x[:4])
    assert set(expected) == {"score"}

    client = create_app(root / "model").test_client()
    body = json.dumps({"instances": [{"features": r.tolist()} for r in x[:4]]})
    answer = client.post("/invocations", data=body, content_type="application/json")
    assert answer.status_code == 200, answer.data
    predictions = answer.get_json()["predictions"]
    assert [set(p) for p in predictions] == [{"score"}] * 4
    np.testing.assert_array_equal(np.float32([p["score"] for p in predictions]), expected["score"])

    protobuf = client.post("/invocations", data=recordio_bytes(x[:4]), content_type="application/x-recordio-protobuf",
                           headers={"Accept": "application/x-recordio-protobuf"})
    records = [parse_record(r) for r in iter_records(io.BytesIO(protobuf.data))]
    assert [list(r.label) for r in records] == [["score"]] * 4
