"""The Flask app through Flask's test client: routes, content types, errors, limits."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import scipy.sparse as sp
from mlroot import recordio_bytes
from sagemaker.amazon.common import read_records

from pipealgos.serve.app import create_app
from pipealgos.serve.settings import ServeConfigError

ALL_ACCEPTS = ["application/json", "application/jsonlines", "text/csv", "application/x-recordio-protobuf"]


@pytest.fixture(scope="module")
def client(trained_pca):
    return create_app(trained_pca.model_dir).test_client()


def projections(body: bytes, accept: str) -> np.ndarray:
    """Parse a PCA response in any response type into an (n, k) float32 array."""
    if accept == "application/json":
        return np.array([r["projection"] for r in json.loads(body)["projections"]], dtype=np.float32)
    if accept == "application/jsonlines":
        return np.array([json.loads(line)["projection"] for line in body.splitlines()], dtype=np.float32)
    if accept == "text/csv":
        return np.loadtxt(io.StringIO(body.decode()), delimiter=",", ndmin=2).astype(np.float32)
    return np.array([r.label["projection"].float32_tensor.values for r in read_records(io.BytesIO(body))],
                    dtype=np.float32)


def request_bodies(rows: np.ndarray) -> dict[str, bytes]:
    sparse = sp.csr_matrix(rows * (np.abs(rows) > 1))
    return {
        "application/json": json.dumps({"instances": [{"features": r} for r in rows.tolist()]}).encode(),
        "application/jsonlines": "".join(json.dumps({"features": r}) + "\n" for r in rows.tolist()).encode(),
        "text/csv": "".join(",".join(map(repr, r)) + "\n" for r in rows.astype(np.float64).tolist()).encode(),
        "application/x-recordio-protobuf": recordio_bytes(rows),
        "application/x-recordio-protobuf (sparse)": recordio_bytes(sparse),
    }


@pytest.mark.parametrize("accept", ALL_ACCEPTS)
@pytest.mark.parametrize("content", ["application/json", "application/jsonlines", "text/csv",
                                     "application/x-recordio-protobuf", "application/x-recordio-protobuf (sparse)"])
def test_every_request_type_and_response_type_gives_the_model_projections(client, trained_pca, content, accept):
    rows = trained_pca.rows[:25]
    body = request_bodies(rows)[content]
    response = client.post("/invocations", data=body, headers={"Content-Type": content.split(" ")[0], "Accept": accept})
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"] == accept
    # the server predicts on what it decoded: a CSR matrix for sparse records
    sent = sp.csr_matrix(rows * (np.abs(rows) > 1)) if "sparse" in content else rows
    np.testing.assert_array_equal(projections(response.data, accept), trained_pca.predict(sent))


def test_default_response_is_json_with_the_pca_keys(client, trained_pca):
    response = client.post("/invocations", data=request_bodies(trained_pca.rows[:2])["text/csv"],
                           headers={"Content-Type": "TEXT/CSV; charset=UTF-8"})
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    document = response.get_json()
    assert list(document) == ["projections"]
    assert [list(r) for r in document["projections"]] == [["projection"], ["projection"]]
    assert len(document["projections"][0]["projection"]) == 3


def test_boto3_endpoint_path_is_served(client, trained_pca):
    rows = trained_pca.rows[:3]
    response = client.post("/endpoints/my-endpoint/invocations", data=request_bodies(rows)["text/csv"],
                           headers={"Content-Type": "text/csv"})
    assert response.status_code == 200
    np.testing.assert_array_equal(projections(response.data, "application/json"), trained_pca.predict(rows))


def test_ping_and_execution_parameters(client):
    ping = client.get("/ping")
    assert ping.status_code == 200 and ping.data == b""
    parameters = client.get("/execution-parameters")
    assert parameters.status_code == 200
    values = parameters.get_json()
    assert values["BatchStrategy"] == "MULTI_RECORD" and values["MaxPayloadInMB"] == 6
    assert 1 <= values["MaxConcurrentTransforms"] and values["MaxConcurrentTransforms"] * values["MaxPayloadInMB"] <= 100


def test_a_large_batch_is_one_model_call(trained_pca):
    app = create_app(trained_pca.model_dir)
    served = app.extensions["pipealgos"]
    calls = []
    real_predict = served.model.predict

    def counting_predict(features):
        calls.append(features.shape[0])
        return real_predict(features)

    served.model.predict = counting_predict
    rows = np.random.default_rng(1).normal(size=(10_000, 6)).astype(np.float32)
    response = app.test_client().post("/invocations", data=recordio_bytes(rows),
                                      headers={"Content-Type": "application/x-recordio-protobuf",
                                               "Accept": "application/x-recordio-protobuf"})
    assert response.status_code == 200
    assert calls == [10_000]
    np.testing.assert_array_equal(projections(response.data, "application/x-recordio-protobuf"), trained_pca.predict(rows))


ERRORS = [
    # (content type, accept, body, status, message part)
    ("application/json", None, b'{"instances": [{"features": [1, 2', 400, "not valid JSON"),
    ("application/json", None, b'{"instances": [{"features": [1, 2, 3, 4, 5, 6]}, {"features": [1, 2]}]}', 400,
     "record 1 'features' has 2 features, but the model takes 6"),
    ("text/csv", None, b"1,2,3\n", 400, "expected feature_dim 6"),
    ("application/x-recordio-protobuf", None, b"\x00" * 16, 400, "not a RecordIO frame"),
    ("application/x-npy", None, b"\x93NUMPY", 415, "send one of application/json"),
    ("text/csv", "image/png", b"1,2,3,4,5,6\n", 406, "supported response types"),
    ("application/json", None, b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ("application/json", None, b'[[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 1e40]]', 400,
     "record 1 values contain NaN or infinity"),
    ("application/json", None, b'{"instances": [{"data": {"features": {"keys": [0], "shape": [1180591620717411303424], '
     b'"values": [1]}}}]}', 400, "record 0 data.features: shape [1180591620717411303424] is out of range"),
]


def test_each_error_is_answered_and_the_next_good_request_succeeds(client, trained_pca):
    good = request_bodies(trained_pca.rows[:4])["text/csv"]
    for content_type, accept, body, status, message in ERRORS:
        headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
        response = client.post("/invocations", data=body, headers=headers)
        assert response.status_code == status, (content_type, response.data)
        assert response.mimetype == "text/plain"
        assert message in response.get_data(as_text=True)
        after = client.post("/invocations", data=good, headers={"Content-Type": "text/csv"})
        assert after.status_code == 200


def test_payload_limit_is_413_then_serving_continues(trained_pca, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "0.01")  # 10,485 bytes
    client = create_app(trained_pca.model_dir).test_client()
    big = recordio_bytes(np.ones((300, 6), dtype=np.float32))
    assert len(big) > 10_485
    response = client.post("/invocations", data=big, headers={"Content-Type": "application/x-recordio-protobuf"})
    assert response.status_code == 413
    assert "exceeds SAGEMAKER_MAX_PAYLOAD_IN_MB=0.01 (10485 bytes)" in response.get_data(as_text=True)
    small = recordio_bytes(np.ones((10, 6), dtype=np.float32))
    assert client.post("/invocations", data=small, headers={"Content-Type": "application/x-recordio-protobuf"}).status_code == 200


def test_an_unexpected_failure_is_500_logged_and_the_next_request_succeeds(trained_pca, caplog):
    """The model call itself fails (injected for rows starting with 13): the server answers
    500 with the reason, logs the traceback and serves the next request."""
    app = create_app(trained_pca.model_dir)
    model = app.extensions["pipealgos"].model
    real_predict = model.predict

    def failing_predict(features):
        if features[0, 0] == 13:
            raise ValueError("injected failure")
        return real_predict(features)

    model.predict = failing_predict
    client = app.test_client()
    response = client.post("/invocations", data=b"13,2,3,4,5,6\n", headers={"Content-Type": "text/csv"})
    assert response.status_code == 500
    assert "internal error during inference: ValueError: injected failure" in response.get_data(as_text=True)
    assert any("inference failed" in r.getMessage() and r.exc_info for r in caplog.records)
    good = client.post("/invocations", data=b"1,2,3,4,5,6\n", headers={"Content-Type": "text/csv"})
    assert good.status_code == 200
    np.testing.assert_array_equal(projections(good.data, "application/json"),
                                  trained_pca.predict(np.arange(1, 7, dtype=np.float32)[None, :]))


def test_default_accept_comes_from_the_environment(trained_pca, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/jsonlines")
    client = create_app(trained_pca.model_dir).test_client()
    response = client.post("/invocations", data=b"1,2,3,4,5,6\n", headers={"Content-Type": "text/csv", "Accept": "*/*"})
    assert response.headers["Content-Type"] == "application/jsonlines"
    assert list(json.loads(response.data)) == ["projection"]


@pytest.mark.parametrize("variable,value", [("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/xml"),
                                            ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "six")])
def test_bad_serving_environment_stops_start_up(trained_pca, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ServeConfigError, match=variable):
        create_app(trained_pca.model_dir)
