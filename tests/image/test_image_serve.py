"""`docker run -p 127.0.0.1:PORT:8080 -v MODEL:/opt/ml/model IMAGE serve`, as SageMaker hosts a model.

The model is trained by the image itself; answers in every request and response format are
checked against numpy's projection ``(x - mean) @ v`` of the model's own arrays. Requests and
responses are built and read with the SageMaker SDK's codecs, not with ours.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from image_helpers import Containers, free_port, require_serve, wait_for_ping
from image_jobs import pca_job
from mlroot import make_ml_root, read_model, recordio_bytes, write_channel_files

RECORDIO = "application/x-recordio-protobuf"


@pytest.fixture(scope="module")
def pca_model(image, image_has_serve, tmp_path_factory):
    """(model dir, its arrays): trained by the image's own `train`."""
    require_serve(image_has_serve)
    hyperparameters, x = pca_job()
    root = make_ml_root(tmp_path_factory.mktemp("serve") / "ml", hyperparameters, {"train": {"TrainingInputMode": "File"}})
    write_channel_files(root, "train", [recordio_bytes(x)])
    started = Containers(image)
    try:
        code, log = started.run(["train"], root, env={"PIPEALGOS_ALGORITHM": "pca"})
    finally:
        started.remove_all()
    assert code == 0, log
    return root / "model", read_model(root)


@pytest.fixture(scope="module")
def server(image, pca_model):
    """Base URL of a `serve` container on a loopback port."""
    started = Containers(image)
    port = free_port()
    container = started.start(["serve"], volumes={pca_model[0]: "/opt/ml/model"}, ports={port: 8080},
                              env={"SAGEMAKER_MODEL_SERVER_WORKERS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ping(url + "/ping", container, timeout=120)
        yield url
    finally:
        started.remove_all()


def invoke(url: str, body: bytes, content_type: str, accept: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url + "/invocations", data=body, method="POST",
                                     headers={"Content-Type": content_type, "Accept": accept})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


QUERY = pca_job()[1][:5]


def encode(x: np.ndarray, content_type: str) -> bytes:
    if content_type == "text/csv":
        return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in x).encode()
    if content_type == "application/json":
        return json.dumps({"instances": [{"features": row.tolist()} for row in x]}).encode()
    if content_type == "application/jsonlines":
        return "".join(json.dumps({"features": row.tolist()}) + "\n" for row in x).encode()
    from sagemaker.amazon.common import write_numpy_to_dense_tensor

    out = io.BytesIO()
    write_numpy_to_dense_tensor(out, x)
    return out.getvalue()


def decode(body: bytes, accept: str) -> np.ndarray:
    if accept == "text/csv":
        return np.array([[float(v) for v in line.split(",")] for line in body.decode().splitlines()])
    if accept == "application/json":
        return np.array([p["projection"] for p in json.loads(body)["projections"]])
    if accept == "application/jsonlines":
        return np.array([json.loads(line)["projection"] for line in body.decode().splitlines()])
    from sagemaker.amazon.common import read_records

    return np.array([list(r.label["projection"].float32_tensor.values) for r in read_records(io.BytesIO(body))])


def expected_projection(arrays: dict, x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float64) - arrays["mean"]) @ arrays["v"].astype(np.float64)


FORMATS = ["text/csv", "application/json", "application/jsonlines", RECORDIO]


def test_ping_answers_empty_200(server):
    with urllib.request.urlopen(server + "/ping", timeout=5) as response:
        assert response.status == 200
        assert response.read() == b""


@pytest.mark.parametrize("content_type", FORMATS)
def test_invocations_in_each_request_format(server, pca_model, content_type):
    status, _, body = invoke(server, encode(QUERY, content_type), content_type, "application/json")
    assert status == 200
    np.testing.assert_allclose(decode(body, "application/json"), expected_projection(pca_model[1], QUERY),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("accept", FORMATS)
def test_invocations_in_each_response_format(server, pca_model, accept):
    status, content_type, body = invoke(server, encode(QUERY, "text/csv"), "text/csv", accept)
    assert status == 200
    assert content_type.split(";")[0] == accept
    np.testing.assert_allclose(decode(body, accept), expected_projection(pca_model[1], QUERY), rtol=1e-4, atol=1e-3)


def test_bad_payload_is_a_client_error(server):
    with pytest.raises(urllib.error.HTTPError) as error:
        invoke(server, b"1,2,not-a-number\n", "text/csv", "application/json")
    assert 400 <= error.value.code < 500


def test_serve_binds_to_sagemaker_bind_to_port(image, pca_model, containers):
    """Inference pipelines set SAGEMAKER_BIND_TO_PORT (the image carries the label that allows it)."""
    port = free_port()
    container = containers.start(["serve"], volumes={pca_model[0]: "/opt/ml/model"}, ports={port: 9123},
                                 env={"SAGEMAKER_BIND_TO_PORT": "9123", "SAGEMAKER_MODEL_SERVER_WORKERS": "1"})
    wait_for_ping(f"http://127.0.0.1:{port}/ping", container, timeout=120)
