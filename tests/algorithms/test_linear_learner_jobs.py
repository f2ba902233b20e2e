"""Linear learner as real training jobs: File vs Pipe, determinism, CSV input, metric lines,
early stopping, the training-sample fallback, class weights, regression losses, bad labels."""

from __future__ import annotations

import numpy as np
import pytest
from linear_learner_jobs import run_job

HP = {"predictor_type": "binary_classifier", "feature_dim": 8, "mini_batch_size": 100, "epochs": 4,
      "num_models": 6, "num_point_for_scaler": 500}


def _binary(n=3000, d=8, seed=0, positive_rate=None):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) * np.linspace(0.5, 20, d) + 3).astype(np.float32)
    w = rng.normal(size=d) / np.linspace(0.5, 20, d)
    margin = (x - 3) @ w
    if positive_rate is not None:
        margin = margin - np.quantile(margin, 1 - positive_rate)
    y = (margin + 0.3 * rng.normal(size=n) > 0).astype(np.float32)
    return x, y


def _channels(x, y):
    return {"train": (x[:2000], y[:2000]), "validation": (x[2000:2500], y[2000:2500]), "test": (x[2500:], y[2500:])}


def test_file_and_pipe_mode_train_the_same_model_and_same_seed_repeats(tmp_path):
    data = _channels(*_binary())
    hp = {**HP, "early_stopping_patience": 10}
    file_job = run_job(tmp_path / "file", hp, data, parts=3)
    pipe_job = run_job(tmp_path / "pipe", hp, data, mode="Pipe")
    again = run_job(tmp_path / "again", hp, data, parts=2)
    assert file_job.status == pipe_job.status == again.status == 0, file_job.failure + pipe_job.failure
    for other in (pipe_job, again):
        for key, value in file_job.model().to_arrays().items():
            np.testing.assert_array_equal(value, other.model().to_arrays()[key])


def test_csv_input_with_label_first_gives_the_protobuf_model(tmp_path):
    data = _channels(*_binary())
    protobuf = run_job(tmp_path / "pb", HP, data)
    csv = run_job(tmp_path / "csv", HP, data, content_type="text/csv")
    assert csv.status == 0, csv.failure
    np.testing.assert_allclose(csv.model().weight, protobuf.model().weight, rtol=1e-5, atol=1e-6)


def test_metric_lines_have_the_real_containers_forms(tmp_path):
    job = run_job(tmp_path, {**HP, "early_stopping_patience": 10}, _channels(*_binary()))
    assert job.status == 0, job.failure
    per_epoch = [(e, ch, name, kind) for e, ch, name, kind, _ in job.metrics() if e]
    for epoch in range(4):
        assert (str(epoch), "train", "binary_classification_cross_entropy_objective", "loss") in per_epoch
        assert (str(epoch), "validation", "binary_classification_cross_entropy_objective", "loss") in per_epoch
    for channel in ("train", "validation", "test"):
        final = job.final(channel)
        assert {"binary_classification_accuracy", "binary_f_1.000", "precision", "recall", "roc_auc_score",
                "binary_classification_cross_entropy_objective"} <= set(final)
        assert final["binary_classification_accuracy"] > 0.9
    assert "#progress_metric: host=algo-1, completed 100 % of epochs" in job.log
    assert "records/second" in job.log and "Best model found for hyperparameters:" in job.log


def test_multiclass_and_regression_metric_names(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1500, 5)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(5, 4)), axis=1).astype(np.float32)
    data = {"train": (x[:1000], y[:1000]), "validation": (x[1000:], y[1000:])}
    multi = run_job(tmp_path / "m", {**HP, "feature_dim": 5, "predictor_type": "multiclass_classifier",
                                     "num_classes": 4, "accuracy_top_k": 2, "f_beta": 0.5}, data)
    assert multi.status == 0, multi.failure
    assert {"multiclass_accuracy", "multiclass_top_k_accuracy_2", "macro_precision", "macro_recall", "macro_f_0.500",
            "multiclass_balanced_accuracy", "dcg",
            "multiclass_cross_entropy_objective"} <= set(multi.final("validation"))
    assert multi.final("validation")["multiclass_accuracy"] > 0.85
    target = (x @ rng.normal(size=5) * 100 + 1000).astype(np.float32)
    regression = run_job(tmp_path / "r", {**HP, "feature_dim": 5, "predictor_type": "regressor"},
                         {"train": (x[:1000], target[:1000]), "test": (x[1000:], target[1000:])})
    assert regression.status == 0, regression.failure
    final = regression.final("test")
    assert {"mse", "rmse", "absolute_loss", "mse_objective"} <= set(final)
    assert final["rmse"] == pytest.approx(np.sqrt(final["mse"]))
    assert final["rmse"] < 0.05 * target.std()  # de-normalised and accurate
    assert "Test data is not provided." in multi.log


def test_early_stopping_stops_when_validation_stops_improving(tmp_path):
    x, y = _binary()
    hp = {**HP, "epochs": 40, "early_stopping_patience": 2, "early_stopping_tolerance": 0.01,
          "binary_classifier_model_selection_criteria": "loss_function"}
    job = run_job(tmp_path, hp, _channels(x, y))
    assert job.status == 0, job.failure
    epochs = {int(e) for e, *_ in job.metrics() if e}
    assert max(epochs) < 39 and "early stopping after epoch" in job.log


def test_without_validation_models_are_compared_on_a_training_sample(tmp_path):
    x, y = _binary()
    job = run_job(tmp_path, HP, {"train": (x[:2500], y[:2500]), "test": (x[2500:], y[2500:])})
    assert job.status == 0, job.failure
    assert "validation" not in {ch for _, ch, *_ in job.metrics()}
    assert job.final("test")["binary_classification_accuracy"] > 0.9


def test_balanced_positive_weight_raises_recall_on_rare_positives(tmp_path):
    x, y = _binary(positive_rate=0.05, seed=2)
    data = _channels(x, y)
    common = {**HP, "num_models": 1, "binary_classifier_model_selection_criteria": "loss_function", "epochs": 3}
    plain = run_job(tmp_path / "plain", common, data)
    balanced = run_job(tmp_path / "balanced", {**common, "positive_example_weight_mult": "balanced"}, data)
    assert plain.status == balanced.status == 0
    assert balanced.final("test")["recall"] > plain.final("test")["recall"]
    assert "positive example weights per model: [" in balanced.log


@pytest.mark.parametrize("loss, extra", [("absolute_loss", {}), ("huber_loss", {"huber_delta": "5"}),
                                         ("eps_insensitive_squared_loss", {}), ("eps_insensitive_absolute_loss", {}),
                                         ("quantile_loss", {"quantile": "0.9"})])
def test_regression_losses_fit_their_targets(tmp_path, loss, extra):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 4)).astype(np.float32)
    y = (x @ [3, -2, 1, 0.5] + 10 + rng.normal(size=3000) * 2).astype(np.float32)
    hp = {**HP, "predictor_type": "regressor", "feature_dim": 4, "loss": loss, "epochs": 10,
          "early_stopping_patience": 10, **extra}
    job = run_job(tmp_path, hp, {"train": (x[:2500], y[:2500]), "test": (x[2500:], y[2500:])})
    assert job.status == 0, job.failure
    # Noise is symmetric, so every loss's minimiser is the true line, except the 0.9 quantile
    # loss, whose intercept moves up by the noise's 0.9 quantile (2 x 1.2816).
    intercept = 10 + (2 * 1.2816 if loss == "quantile_loss" else 0)
    np.testing.assert_allclose(job.model().weight[:, 0], [3, -2, 1, 0.5], atol=0.25)
    assert job.model().bias[0] == pytest.approx(intercept, abs=0.3)


@pytest.mark.parametrize("predictor, labels, fragment", [
    ("binary_classifier", [0, 1, 2], "Binary classifier labels must be 0 or 1"),
    ("multiclass_classifier", [0, 1, 3.5], "Multiclass labels must be integers"),
])
def test_bad_labels_fail_the_job_naming_channel_and_fix(tmp_path, predictor, labels, fragment):
    x = np.ones((30, 2), dtype=np.float32)
    y = np.resize(np.array(labels, dtype=np.float32), 30)
    job = run_job(tmp_path, {**HP, "feature_dim": 2, "predictor_type": predictor, "num_classes": 3}, {"train": (x, y)})
    assert job.status == 1
    assert "channel 'train'" in job.failure and fragment in job.failure


def test_sparse_records_train_the_dense_model(tmp_path):
    import scipy.sparse as sp

    x, y = _binary()
    x[:, ::2] = 0.0
    dense = run_job(tmp_path / "dense", HP, {"train": (x[:2000], y[:2000])})
    sparse = run_job(tmp_path / "sparse", HP, {"train": (sp.csr_matrix(x[:2000]), y[:2000])})
    assert sparse.status == 0, sparse.failure
    np.testing.assert_allclose(sparse.model().weight, dense.model().weight, rtol=1e-5, atol=1e-6)


def test_a_width_that_cannot_fit_in_memory_is_a_client_error(tmp_path):
    """feature_dim=auto takes the width the records declare; a sparse record may declare up to
    2**31 - 1 features, whose dense minibatches no machine holds: refused naming the width."""
    import scipy.sparse as sp

    x = sp.csr_matrix(([1.0, 2.0], ([0, 1], [3, 7])), shape=(2, 2**31 - 1), dtype=np.float32)
    job = run_job(tmp_path, {k: v for k, v in HP.items() if k != "feature_dim"}, {"train": (x, np.array([0, 1.0]))})
    assert job.status == 1, job.failure
    assert "a width of 2147483647 features, declared by the data (feature_dim=auto)" in job.failure
    assert "Set feature_dim to the data's real width" in job.failure


def test_unlabelled_records_fail_the_job(tmp_path):
    x = np.ones((30, 2), dtype=np.float32)
    job = run_job(tmp_path, {**HP, "feature_dim": 2}, {"train": (x, None)})
    assert job.status == 1
    assert "channel 'train'" in job.failure and "records carry no label" in job.failure


def test_balanced_multiclass_weights_raise_the_rare_class_recall(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(4000, 3)).astype(np.float32)
    y = np.digitize(x[:, 0] + 0.8 * rng.normal(size=4000), [-1.8, 0.0]).astype(np.float32)  # class 0 is rare
    data = {"train": (x[:3000], y[:3000]), "test": (x[3000:], y[3000:])}
    common = {**HP, "feature_dim": 3, "predictor_type": "multiclass_classifier", "num_classes": 3, "num_models": 1}
    recall = {}
    for balanced in (False, True):
        job = run_job(tmp_path / str(balanced), {**common, "balance_multiclass_weights": balanced}, data)
        assert job.status == 0, job.failure
        predicted = job.model().predict(x[3000:])["predicted_label"]
        recall[balanced] = np.mean(predicted[y[3000:] == 0] == 0)
    assert recall[True] > recall[False] + 0.1, recall


def test_without_bias_the_model_passes_through_the_origin(tmp_path):
    x, y = _binary()
    for init in ("uniform", "normal"):
        job = run_job(tmp_path / init, {**HP, "use_bias": "False", "init_method": init, "init_bias": "0.5"},
                      {"train": (x[:2000], y[:2000])})
        assert job.status == 0, job.failure
        assert job.model().bias.tolist() == [0.0]


def test_tuning_job_trains_one_model(tmp_path):
    """Under a hyperparameter tuning job (``_tuning_objective_metric`` set) the real container
    disables its internal parallel models; so do we."""
    data = _channels(*_binary())
    job = run_job(tmp_path, {**HP, "_tuning_objective_metric": "validation:objective_loss"}, data)
    assert job.status == 0, job.failure
    assert "num_models forced to 1" in job.log
    assert "'num_models': 1" in job.log
