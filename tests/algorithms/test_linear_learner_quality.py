"""Linear learner against independent references on data shipped with scikit-learn (fixed-seed
60/20/20 train / validation / test split; the references fit the same training rows,
standardised), the calibrated threshold against the target it promises, and a large synthetic
logistic problem whose true weights are known."""

from __future__ import annotations

import numpy as np
import pytest
from linear_learner_jobs import recordio_bytes, run_job, split
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, mean_squared_error, precision_score, recall_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

# What a user would set for a few hundred rows: small minibatches, enough epochs, patience,
# weight decay near the references' (C=1 / alpha=1 on n rows is wd = 1/n: 0.001-0.003 here),
# and a learning rate. Given values make the models spread half a decade around the rate (a
# full decade around wd) instead of a decade around the auto rate: with a few hundred
# validation rows, picking among wilder models is mostly noise.
SMALL_DATA = {"mini_batch_size": 32, "epochs": 30, "early_stopping_patience": 10, "wd": 0.001,
              "learning_rate": 0.003}


def _reference_inputs(data):
    scaler = StandardScaler().fit(data["train"][0])
    return {k: (scaler.transform(x), y) for k, (x, y) in data.items()}


def test_breast_cancer_matches_logistic_regression(tmp_path):
    x, y = load_breast_cancer(return_X_y=True)
    data = split(x, y)
    # Selected and thresholded as the reference is: by cross-entropy, at probability 0.5. (The
    # calibrated criteria are tested below; on 114 validation rows they trade a row or two.)
    hp = {"predictor_type": "binary_classifier", "feature_dim": 30, **SMALL_DATA,
          "binary_classifier_model_selection_criteria": "loss_function"}
    job = run_job(tmp_path, hp, data)
    assert job.status == 0, job.failure
    ref_data = _reference_inputs(data)
    reference = LogisticRegression(max_iter=5000).fit(*ref_data["train"])
    x_test, y_test = data["test"]
    out = job.model().predict(x_test)
    ref_accuracy = accuracy_score(y_test, reference.predict(ref_data["test"][0]))
    ref_auc = roc_auc_score(y_test, reference.decision_function(ref_data["test"][0]))
    accuracy = accuracy_score(y_test, out["predicted_label"])
    auc = roc_auc_score(y_test, out["score"])
    assert accuracy >= ref_accuracy - 0.01
    assert auc >= ref_auc - 0.01
    # The job's own test metrics describe the stored model.
    reported = job.final("test")
    assert reported["binary_classification_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert reported["roc_auc_score"] == pytest.approx(auc, abs=0.005)
    assert np.all((out["score"] >= 0) & (out["score"] <= 1))


def test_digits_matches_multinomial_logistic_regression(tmp_path):
    x, y = load_digits(return_X_y=True)
    data = split(x, y)
    hp = {"predictor_type": "multiclass_classifier", "num_classes": 10, "feature_dim": 64, **SMALL_DATA}
    job = run_job(tmp_path, hp, data)
    assert job.status == 0, job.failure
    ref_data = _reference_inputs(data)
    reference = LogisticRegression(max_iter=5000).fit(*ref_data["train"])
    x_test, y_test = data["test"]
    out = job.model().predict(x_test)
    accuracy = accuracy_score(y_test, out["predicted_label"])
    assert accuracy >= accuracy_score(y_test, reference.predict(ref_data["test"][0])) - 0.01
    assert out["score"].shape == (len(x_test), 10)
    np.testing.assert_allclose(out["score"].sum(axis=1), 1, rtol=1e-5)
    assert job.final("test")["multiclass_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_diabetes_matches_ridge(tmp_path):
    x, y = load_diabetes(return_X_y=True)
    data = split(x, y)
    job = run_job(tmp_path, {"predictor_type": "regressor", "feature_dim": 10, **SMALL_DATA}, data)
    assert job.status == 0, job.failure
    ref_data = _reference_inputs(data)
    reference = Ridge(alpha=1.0).fit(*ref_data["train"])
    x_test, y_test = data["test"]
    out = job.model().predict(x_test)
    assert set(out) == {"score"}
    mse = mean_squared_error(y_test, out["score"])
    assert mse <= 1.05 * mean_squared_error(y_test, reference.predict(ref_data["test"][0]))
    assert job.final("test")["mse"] == pytest.approx(mse, rel=1e-4)


@pytest.mark.parametrize("criterion, target", [("precision_at_target_recall", 0.99),
                                               ("recall_at_target_precision", 0.99)])
def test_calibrated_threshold_meets_its_target_on_validation(tmp_path, criterion, target):
    x, y = load_breast_cancer(return_X_y=True)
    data = split(x, y)
    hp = {"predictor_type": "binary_classifier", "feature_dim": 30, **SMALL_DATA,
          "binary_classifier_model_selection_criteria": criterion, "target_recall": target,
          "target_precision": target}
    job = run_job(tmp_path, hp, data)
    assert job.status == 0, job.failure
    model = job.model()
    x_val, y_val = data["validation"]
    predicted = model.predict(x_val)["predicted_label"]
    if criterion == "precision_at_target_recall":
        assert recall_score(y_val, predicted) >= target
    else:
        assert precision_score(y_val, predicted) >= target
    assert job.final("validation")["recall"] == pytest.approx(recall_score(y_val, predicted), abs=1e-6)
    # A strict target moves the threshold away from the uncalibrated 0.
    assert model.threshold != 0.0


@pytest.mark.slow
def test_large_synthetic_logistic_recovers_known_weights(tmp_path):
    """1,000,000 x 50 rows drawn from a logistic model with known weights and bias."""
    n, d = 1_000_000, 50
    rng = np.random.default_rng(7)
    w = rng.uniform(-1, 1, d)
    bias = 0.5
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ w + bias)))).astype(np.float32)
    hp = {"predictor_type": "binary_classifier", "feature_dim": d, "mini_batch_size": 1000, "epochs": 2,
          "num_models": 1, "learning_rate": 0.01, "lr_scheduler_factor": 0.85, "wd": 0, "l1": 0,
          "binary_classifier_model_selection_criteria": "loss_function"}
    job = run_job(tmp_path, hp, {"train": (x[:900_000], y[:900_000]), "validation": (x[900_000:], y[900_000:])},
                  parts=4)
    assert job.status == 0, job.failure
    model = job.model()
    # Maximum-likelihood standard errors here are ~0.003; the fast-decaying schedule (x0.85 per
    # 100 steps) lets adam settle so its step noise stays below the tolerance.
    np.testing.assert_allclose(model.weight[:, 0], w, atol=0.02)
    assert model.bias[0] == pytest.approx(bias, abs=0.02)
