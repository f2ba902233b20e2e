"""SageMaker built-ins' model files read as pipealgos models, and ours written in their layout.

Models are built from the published layout with zipfile and the NDArray writer
(``sagemaker_models``) and predictions compared with the arithmetic SageMaker's image applies;
what we export is read back with zipfile, json and the NDArray reader alone."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from sagemaker_models import (factorization_machine_files, factorization_machine_output, kmeans_files,
                              linear_learner_files, linear_learner_reference, ntm_arrays, ntm_files, ntm_topic_weights,
                              pca_files, real_pca_model_file, sigmoid, write_folder)

from pipealgos.io.ndarray import read_ndarrays, write_ndarrays
from pipealgos.platform.registry import get_algorithm
from pipealgos.platform.sagemaker_artifact import export_files, load_sagemaker_model
from pipealgos.platform.sagemaker_format import SageMakerModelError

RNG = np.random.default_rng(7)


def _predict(stored, x):
    model = get_algorithm(stored.algorithm).model_type.from_arrays(stored.arrays, stored.resolved_hyperparameters)
    return model.predict(x)


@pytest.fixture(autouse=True)
def _no_algorithm_in_environment(monkeypatch):
    monkeypatch.delenv("PIPEALGOS_ALGORITHM", raising=False)


def test_real_pca_artifact_is_found_to_be_pca_and_projects_as_its_arrays_say(tmp_path):
    folder = write_folder(tmp_path / "model", {"model_algo-1": real_pca_model_file()})
    stored = load_sagemaker_model(folder)
    saved = read_ndarrays(real_pca_model_file())
    x = RNG.normal(size=(20, 26)).astype(np.float32)
    assert stored.algorithm == "pca" and stored.feature_dim == 26
    assert stored.hyperparameters == {"feature_dim": 26, "num_components": 25, "subtract_mean": True}
    np.testing.assert_allclose(_predict(stored, x)["projection"], (x - saved["mean"]) @ saved["v"], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("with_mean", [True, False])
def test_synthetic_pca_projects_as_x_minus_mean_times_v(tmp_path, with_mean):
    v, mean = RNG.normal(size=(5, 3)), RNG.normal(size=5) if with_mean else None
    stored = load_sagemaker_model(write_folder(tmp_path / "model", pca_files(v, mean)))
    x = RNG.normal(size=(8, 5))
    expected = (x - (mean if with_mean else 0)) @ v
    np.testing.assert_allclose(_predict(stored, x)["projection"], expected, rtol=1e-5, atol=1e-5)
    assert stored.hyperparameters["subtract_mean"] is with_mean


def test_kmeans_list_of_one_array_gives_nearest_centroid_and_distance(tmp_path):
    centroids = RNG.normal(size=(4, 3)) * 5
    stored = load_sagemaker_model(write_folder(tmp_path / "model", kmeans_files(centroids)))
    x = RNG.normal(size=(30, 3)) * 5
    distances = np.linalg.norm(x[:, None, :] - centroids.astype(np.float32)[None], axis=2)
    out = _predict(stored, x)
    assert stored.algorithm == "kmeans" and stored.hyperparameters == {"feature_dim": 3, "k": 4}
    np.testing.assert_array_equal(out["closest_cluster"], distances.argmin(axis=1))
    np.testing.assert_allclose(out["distance_to_cluster"], distances.min(axis=1), rtol=1e-5)


LINEAR_LEARNER_CASES = [
    ("binary_classifier", "logistic", 1, 0.3),
    ("binary_classifier", "hinge_loss", 1, 0.25),
    ("multiclass_classifier", "softmax_loss", 4, 0.5),
    ("regressor", "squared_loss", 1, 0.5),
]


@pytest.mark.parametrize("predictor, loss, outputs, threshold", LINEAR_LEARNER_CASES)
def test_linear_learner_zip_answers_as_sagemakers_image(tmp_path, predictor, loss, outputs, threshold):
    weight, bias = RNG.normal(size=(6, outputs)), RNG.normal(size=outputs)
    folder = write_folder(tmp_path / "model", linear_learner_files(weight, bias, predictor, loss, threshold))
    stored = load_sagemaker_model(folder)
    x = RNG.normal(size=(200, 6))
    expected = linear_learner_reference(x, weight, bias, predictor, loss, threshold)
    out = _predict(stored, x)
    assert stored.algorithm == "linear-learner" and stored.feature_dim == 6
    np.testing.assert_allclose(out["score"].reshape(expected["score"].shape), expected["score"], rtol=1e-4, atol=1e-5)
    if "predicted_label" in expected:
        # Both sides of the threshold occur, or the label check would prove nothing.
        assert 0 < expected["predicted_label"].mean() < 1 or predictor == "multiclass_classifier"
        np.testing.assert_array_equal(out["predicted_label"], expected["predicted_label"])
    else:
        assert "predicted_label" not in out


def test_the_named_algorithm_wins_and_a_mismatched_layout_is_a_clear_error(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "model", kmeans_files(RNG.normal(size=(2, 3))))
    monkeypatch.setenv("PIPEALGOS_ALGORITHM", "pca")
    with pytest.raises(SageMakerModelError, match=r"not PCA's named arrays.*read as a SageMaker pca model"):
        load_sagemaker_model(folder)
    assert load_sagemaker_model(folder, "kmeans").algorithm == "kmeans"


def test_unrecognised_model_file_asks_for_the_algorithm(tmp_path):
    folder = write_folder(tmp_path / "model", {"model_algo-1": b"not a model"})
    with pytest.raises(SageMakerModelError, match="no layout pipealgos recognises.*--algorithm or PIPEALGOS_ALGORITHM"):
        load_sagemaker_model(folder)


def test_damaged_linear_learner_files_name_the_member_and_the_problem(tmp_path):
    files = linear_learner_files(np.ones((3, 1)), np.zeros(1), "binary_classifier", "logistic", threshold=1.5)
    with pytest.raises(SageMakerModelError, match=r"additional-params.json: threshold 1.5 is not a probability"):
        load_sagemaker_model(write_folder(tmp_path / "a", files))
    files = linear_learner_files(np.ones((3, 2)), np.zeros(2), "binary_classifier", "logistic")
    with pytest.raises(SageMakerModelError, match=r"arg:fc0_weight has shape \(3, 2\).*binary_classifier"):
        load_sagemaker_model(write_folder(tmp_path / "b", files))
    files = linear_learner_files(np.full((3, 1), np.nan), np.zeros(1), "regressor", "squared_loss")
    with pytest.raises(SageMakerModelError, match="arg:fc0_weight' holds NaN"):
        load_sagemaker_model(write_folder(tmp_path / "c", files))


def test_zip_that_would_inflate_past_the_cap_is_refused(tmp_path, monkeypatch):
    files = linear_learner_files(np.zeros((20_000, 1)), np.zeros(1), "regressor", "squared_loss")
    monkeypatch.setenv("PIPEALGOS_MODEL_MAX_EXTRACTED_MB", "0.01")
    with pytest.raises(SageMakerModelError, match="inflate to .* more than the 10485 allowed"):
        load_sagemaker_model(write_folder(tmp_path / "model", files), "linear-learner")


# ---------------------------------------------------------------------------------------------
# Ours, written in SageMaker's layout and read back by an independent reader


def _stored(algorithm, arrays, hyperparameters):
    from pipealgos.platform.model_store import StoredModel

    spec = get_algorithm(algorithm)
    feature_dim = spec.model_type.from_arrays(arrays, hyperparameters).feature_dim
    return StoredModel(algorithm, hyperparameters, arrays, {}, hyperparameters, feature_dim)


def test_pca_and_kmeans_exports_are_the_ndarray_files_sagemaker_reads():
    v, mean, s = RNG.normal(size=(5, 2)).astype(np.float32), RNG.normal(size=(1, 5)).astype(np.float32), \
        np.array([1.0, 2.0], np.float32)
    pca = read_ndarrays(export_files(_stored("pca", {"s": s, "v": v, "mean": mean}, {}))["model_algo-1"])
    assert list(pca) == ["s", "v", "mean"]
    np.testing.assert_array_equal(pca["v"], v)
    np.testing.assert_array_equal(pca["mean"], mean)
    centroids = RNG.normal(size=(3, 4)).astype(np.float32)
    kmeans = read_ndarrays(export_files(_stored("kmeans", {"centroids": centroids}, {}))["model_algo-1"])
    assert isinstance(kmeans, list) and len(kmeans) == 1
    np.testing.assert_array_equal(kmeans[0], centroids)


def _read_linear_learner_zip(data: bytes):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    params = read_ndarrays(members["mx-mod-0000.params"])
    return members, json.loads(members["additional-params.json"]), params


@pytest.mark.parametrize("predictor, loss, outputs, margin_threshold", [
    ("binary_classifier", "logistic", 1, -0.4), ("binary_classifier", "hinge_loss", 1, 0.3),
    ("multiclass_classifier", "softmax_loss", 3, None), ("regressor", "squared_loss", 1, None)])
def test_linear_learner_export_predicts_the_same_through_sagemakers_arithmetic(predictor, loss, outputs,
                                                                               margin_threshold):
    arrays = {"weight": RNG.normal(size=(5, outputs)).astype(np.float32),
              "bias": RNG.normal(size=outputs).astype(np.float32)}
    if margin_threshold is not None:
        arrays["threshold"] = np.array([margin_threshold], np.float32)
    hyperparameters = {"predictor_type": predictor, "loss": loss}
    if predictor == "multiclass_classifier":
        hyperparameters["num_classes"] = outputs
    stored = _stored("linear-learner", arrays, hyperparameters)
    members, additional, params = _read_linear_learner_zip(export_files(stored)["model_algo-1"])
    assert json.loads(members["manifest.json"]) == {"additional-params.json": "json", "mx-mod": "mxnet_module",
                                                    "version": 1}
    assert additional["predictor_type"] == predictor and additional["loss_type"] == loss
    assert params["arg:fc0_weight"].shape == (5, outputs) and params["arg:fc0_bias"].shape == (1, outputs)
    x = RNG.normal(size=(300, 5))
    expected = linear_learner_reference(x, params["arg:fc0_weight"], params["arg:fc0_bias"], predictor,
                                        additional["loss_type"], additional["threshold"])
    ours = _predict(stored, x)
    np.testing.assert_allclose(ours["score"].reshape(expected["score"].shape), expected["score"], rtol=1e-4,
                               atol=1e-5)
    if "predicted_label" in expected:
        np.testing.assert_array_equal(ours["predicted_label"], expected["predicted_label"])
    if loss == "logistic":  # the score threshold is the probability of our margin threshold
        assert additional["threshold"] == pytest.approx(sigmoid(margin_threshold))


def test_linear_learner_symbol_is_an_mxnet_graph_of_the_linear_model():
    stored = _stored("linear-learner", {"weight": np.ones((7, 3), np.float32), "bias": np.zeros(3, np.float32)},
                     {"predictor_type": "multiclass_classifier", "loss": "softmax_loss", "num_classes": 3})
    members, _, params = _read_linear_learner_zip(export_files(stored)["model_algo-1"])
    graph = json.loads(members["mx-mod-symbol.json"])
    nodes = graph["nodes"]
    by_name = {node["name"]: index for index, node in enumerate(nodes)}
    assert [node["op"] for node in nodes[:5]] == ["null", "null", "dot", "null", "broadcast_add"]
    assert [nodes[i]["name"] for i in (0, 1, 3)] == ["data", "fc0_weight", "fc0_bias"]
    assert nodes[2]["inputs"] == [[by_name["data"], 0, 0], [by_name["fc0_weight"], 0, 0]]
    assert nodes[4]["inputs"] == [[2, 0, 0], [by_name["fc0_bias"], 0, 0]]
    assert nodes[1]["attrs"]["__shape__"] == "(7, 3)" and nodes[3]["attrs"]["__shape__"] == "(1, 3)"
    # Every input refers to an earlier node; the variables are the arg nodes; one output row per node.
    assert all(ref[0] < index for index, node in enumerate(nodes) for ref in node["inputs"])
    assert graph["arg_nodes"] == [i for i, node in enumerate(nodes) if node["op"] == "null"] == [0, 1, 3]
    assert graph["node_row_ptr"] == list(range(len(nodes) + 1))
    (head,) = graph["heads"]
    assert head[0] == len(nodes) - 1 and nodes[head[0]]["inputs"] == [[4, 0, 0]]
    assert isinstance(graph["attrs"]["mxnet_version"][1], int)
    # Each parameter of the graph has its array, under the Module's arg: prefix.
    assert {f"arg:{nodes[i]['name']}" for i in graph["arg_nodes"][1:]} == set(params)


def test_lda_list_of_alpha_and_beta_round_trips_and_is_told_from_kmeans(tmp_path):
    alpha = np.array([0.5, 0.2, 0.1], np.float32)
    beta = RNG.dirichlet(np.ones(8), size=3).astype(np.float32)
    folder = write_folder(tmp_path / "model", {"model_algo-1": write_ndarrays([alpha, beta])})
    stored = load_sagemaker_model(folder)
    assert stored.algorithm == "lda" and stored.hyperparameters == {"feature_dim": 8, "num_topics": 3}
    np.testing.assert_array_equal(stored.arrays["beta"], beta)
    exported = read_ndarrays(export_files(stored)["model_algo-1"])
    assert isinstance(exported, list) and [a.shape for a in exported] == [(3,), (3, 8)]
    np.testing.assert_array_equal(exported[0], alpha)
    counts = np.zeros((2, 8))
    counts[0, :3], counts[1, 5:] = 4, 4
    mixtures = _predict(stored, counts)["topic_mixture"]
    assert mixtures.shape == (2, 3) and np.allclose(mixtures.sum(axis=1), 1, atol=1e-5)


def test_ntm_zip_is_found_served_and_exported_with_arg_names(tmp_path):
    arrays = ntm_arrays(vocabulary=12, topics=3, rng=RNG)
    stored = load_sagemaker_model(write_folder(tmp_path / "model", ntm_files(arrays, "sigmoid")))
    assert stored.algorithm == "ntm" and stored.feature_dim == 12
    counts = RNG.poisson(1.0, size=(10, 12)).astype(np.float64)
    np.testing.assert_allclose(_predict(stored, counts)["topic_weights"], ntm_topic_weights(counts, arrays),
                               rtol=1e-4, atol=1e-6)
    with zipfile.ZipFile(io.BytesIO(export_files(stored)["model_algo-1"])) as archive:
        params = read_ndarrays(archive.read("params"))
        meta = json.loads(archive.read("meta.json"))
        graph = json.loads(archive.read("symbol.json"))
    assert set(params) == {f"arg:{name}" for name in arrays}
    np.testing.assert_array_equal(params["arg:projection_weight"], arrays["projection_weight"].astype(np.float32))
    assert meta["training_parameters"]["encoder_layers_activation"] == "sigmoid"
    names = [node["name"] for node in graph["nodes"]]
    assert {names[i] for i in graph["arg_nodes"]} == {"data", *arrays}
    assert [names[head[0]] for head in graph["heads"]] == ["mean", "logsigma", "log_softmax"]


def test_ntm_activation_comes_from_meta_json(tmp_path):
    arrays = ntm_arrays(vocabulary=6, topics=2, rng=RNG)
    sigmoid_model = load_sagemaker_model(write_folder(tmp_path / "a", ntm_files(arrays, "sigmoid")))
    tanh_model = load_sagemaker_model(write_folder(tmp_path / "b", ntm_files(arrays, "tanh")))
    counts = np.ones((1, 6))
    assert not np.allclose(_predict(sigmoid_model, counts)["topic_weights"],
                           _predict(tanh_model, counts)["topic_weights"])


@pytest.mark.parametrize("predictor", ["binary_classifier", "regressor"])
def test_factorization_machine_zip_answers_as_sagemakers_image_and_exports_back(tmp_path, predictor):
    w0, w1, v = 0.1, RNG.normal(size=7), RNG.normal(size=(7, 3)) * 0.5
    stored = load_sagemaker_model(write_folder(tmp_path / "model", factorization_machine_files(w0, w1, v, predictor)))
    assert stored.algorithm == "factorization-machines" and stored.feature_dim == 7
    x = RNG.normal(size=(50, 7))
    raw = factorization_machine_output(x, np.float32(w0), w1.astype(np.float32), v.astype(np.float32))
    out = _predict(stored, x)
    if predictor == "regressor":
        np.testing.assert_allclose(out["score"], raw, rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_allclose(out["score"], sigmoid(raw), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(out["predicted_label"], sigmoid(raw) >= 0.5)
    with zipfile.ZipFile(io.BytesIO(export_files(stored)["model_algo-1"])) as archive:
        params = read_ndarrays(archive.read("params"))
        meta = json.loads(archive.read("meta.json"))
        graph = json.loads(archive.read("symbol.json"))
    assert set(params) == {"arg:v", "arg:w1_weight", "arg:w0_weight"} and params["arg:w1_weight"].shape == (7, 1)
    assert meta["training_parameters"]["predictor_type"] == predictor
    assert meta["training_parameters"]["feature_dim"] == "7"
    names = [node["name"] for node in graph["nodes"]]
    assert {names[i] for i in graph["arg_nodes"]} == {"data", "v", "w1_weight", "w0_weight"}
