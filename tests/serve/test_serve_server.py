"""The real `serve` process (gunicorn on loopback) driven by real clients: the SageMaker SDK v2
Predictor through LocalSession, boto3's sagemaker-runtime, and raw HTTP."""

from __future__ import annotations

import io
import json
import select
import socket
import subprocess
import time

import boto3
import numpy as np
import pytest
from mlroot import FifoFeeder, make_ml_root, recordio_bytes
from sagemaker.amazon.common import read_records
from sagemaker.deserializers import JSONDeserializer, RecordDeserializer
from sagemaker.local import LocalSession
from sagemaker.predictor import Predictor
from sagemaker.serializers import JSONSerializer, RecordSerializer
from serve_helpers import VENV_BIN, start_server, training_rows

from pipealgos.platform.model_store import load_model, save_model
from pipealgos.platform.registry import get_algorithm
from pipealgos.serve import settings

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def aws_env(monkeypatch):
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def local_session(server, aws_env, monkeypatch):
    """An SDK LocalSession whose runtime client calls our server instead of a Docker container."""
    monkeypatch.setattr("sagemaker.local.local_session.get_docker_host", lambda: "127.0.0.1")
    session = LocalSession(boto_session=boto3.Session(region_name="us-east-1"))
    session.config = {"local": {"local_code": True, "serving_port": server.port}}
    return session


def test_ping_answers_within_the_probe_timeout(server):
    started = time.monotonic()
    status, _, body = server.request("GET", "/ping")
    assert status == 200 and body == b""
    assert time.monotonic() - started < 2.0


def test_sdk_record_predictor(local_session, trained_pca):
    predictor = Predictor("pca-endpoint", sagemaker_session=local_session,
                          serializer=RecordSerializer(), deserializer=RecordDeserializer())
    rows = trained_pca.rows[:40]
    records = predictor.predict(rows)
    got = np.array([r.label["projection"].float32_tensor.values for r in records], dtype=np.float32)
    np.testing.assert_array_equal(got, trained_pca.predict(rows))


def test_sdk_json_predictor(local_session, trained_pca):
    predictor = Predictor("pca-endpoint", sagemaker_session=local_session,
                          serializer=JSONSerializer(), deserializer=JSONDeserializer())
    rows = trained_pca.rows[:40]
    answer = predictor.predict({"instances": [{"features": r} for r in rows.tolist()]})
    got = np.array([p["projection"] for p in answer["projections"]], dtype=np.float32)
    np.testing.assert_array_equal(got, trained_pca.predict(rows))


@pytest.mark.parametrize("content_type,accept", [("text/csv", "application/jsonlines"),
                                                 ("application/x-recordio-protobuf", "application/json")])
def test_boto3_invoke_endpoint(server, aws_env, trained_pca, content_type, accept):
    runtime = boto3.client("sagemaker-runtime", endpoint_url=f"http://127.0.0.1:{server.port}", region_name="us-east-1")
    rows = trained_pca.rows[:10]
    body = (recordio_bytes(rows) if content_type != "text/csv"
            else "".join(",".join(map(repr, r)) + "\n" for r in rows.astype(np.float64).tolist()).encode())
    response = runtime.invoke_endpoint(EndpointName="pca-endpoint", Body=body, ContentType=content_type, Accept=accept)
    assert response["ContentType"] == accept
    text = response["Body"].read().decode()
    if accept == "application/jsonlines":
        got = [json.loads(line)["projection"] for line in text.splitlines()]
    else:
        got = [p["projection"] for p in json.loads(text)["projections"]]
    np.testing.assert_array_equal(np.array(got, dtype=np.float32), trained_pca.predict(rows))


def test_errors_then_good_requests_on_one_kept_alive_connection(server, trained_pca):
    good = "".join(",".join(map(repr, r)) + "\n" for r in trained_pca.rows[:3].astype(np.float64).tolist()).encode()
    expected = trained_pca.predict(trained_pca.rows[:3])
    over_limit = b"1,2,3,4,5,6\n" * (6 * 1024 * 1024 // 12 + 1)  # just over the default 6 MB
    cases = [
        ("text/csv", None, b"1,2,3\n", 400, "expected feature_dim 6"),
        ("application/json", None, b'{"instances": [{"features": [1,2,3,4,5,6]}, {"features": [1]}]}', 400,
         "record 1 'features' has 1 features, but the model takes 6"),
        ("application/x-recordio-protobuf", None, b"garbage!", 400, "not a RecordIO frame"),
        ("image/jpeg", None, b"\xff\xd8", 415, "send one of"),
        ("text/csv", "application/xml", good, 406, "supported response types"),
        ("text/csv", None, over_limit, 413, "exceeds SAGEMAKER_MAX_PAYLOAD_IN_MB=6"),
    ]
    conn = server.connection()
    try:
        for content_type, accept, body, status, message in cases:
            headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
            conn.request("POST", "/invocations", body=body, headers=headers)
            response = conn.getresponse()
            assert (response.status, content_type) == (status, content_type)
            assert message in response.read().decode()
            conn.request("POST", "/invocations", body=good, headers={"Content-Type": "text/csv"})
            response = conn.getresponse()
            assert response.status == 200
            got = [p["projection"] for p in json.loads(response.read())["projections"]]
            np.testing.assert_array_equal(np.array(got, dtype=np.float32), expected)
    finally:
        conn.close()


def test_chunked_body_over_the_limit_is_413(server):
    conn = server.connection()
    try:
        chunks = (b"1,2,3,4,5,6\n" * 65536 for _ in range(9))  # 7 MB, no Content-Length
        conn.request("POST", "/invocations", body=chunks, headers={"Content-Type": "text/csv"}, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413
        assert "more than 6291456 bytes" in response.read().decode()
    finally:
        conn.close()
    assert server.request("GET", "/ping")[0] == 200


def test_unexpected_failure_is_500_logged_and_the_server_keeps_serving(trained_pca, tmp_path):
    """A damaged model (its mean one value short) fails inside the model call on every request:
    each is answered 500 with the reason, the traceback is logged, and the worker lives on."""
    stored = load_model(trained_pca.model_dir)
    root = tmp_path / "ml"
    arrays = {**stored.arrays, "mean": stored.arrays["mean"][:, :-1]}
    save_model(root / "model", "pca", stored.hyperparameters, arrays, stored.resolved_hyperparameters,
               stored.feature_dim)
    process = start_server(root, tmp_path / "serve.log", workers=1)
    try:
        for _ in range(2):
            status, _, body = process.request("POST", "/invocations", b"1,2,3,4,5,6\n", {"Content-Type": "text/csv"})
            assert status == 500 and b"internal error during inference: ValueError" in body
            assert process.request("GET", "/ping")[0] == 200
    finally:
        assert process.stop() == 0
    log = process.logs()
    assert "ERROR" in log and "inference failed" in log and "Traceback" in log
    assert log.count("Booting worker") == 1  # the same worker answered every request


def test_sigterm_shuts_down_gracefully(trained_pca, tmp_path):
    process = start_server(trained_pca.root, tmp_path / "serve.log", workers=1)
    assert process.request("GET", "/ping")[0] == 200
    started = time.monotonic()
    assert process.stop(timeout=30) == 0, process.logs()
    assert time.monotonic() - started < 30  # inside SageMaker's SIGTERM -> SIGKILL window
    with pytest.raises(OSError):
        process.request("GET", "/ping")


def test_serve_refuses_to_start_without_a_model(tmp_path):
    (tmp_path / "model").mkdir()
    result = subprocess.run([str(VENV_BIN / "serve"), "--ml-root", str(tmp_path), "--host", "127.0.0.1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "serve: cannot start" in result.stderr and "no manifest.json" in result.stderr


@pytest.mark.slow
def test_train_with_the_cli_in_pipe_mode_then_serve_and_predict(tmp_path):
    """`pipealgos train` (Pipe mode) -> `serve` on its model/ -> predictions equal the model's."""
    root = make_ml_root(tmp_path / "ml", {"feature_dim": 5, "num_components": 2, "mini_batch_size": 64},
                        {"train": {"TrainingInputMode": "Pipe"}})
    rows = training_rows(n=500, d=5, seed=3)
    feeder = FifoFeeder(root, "train", [recordio_bytes(rows)])
    trained = subprocess.run([str(VENV_BIN / "pipealgos"), "train", "--ml-root", str(root), "--algorithm", "pca"],
                             capture_output=True, text=True, timeout=180)
    feeder.join()
    assert trained.returncode == 0, trained.stderr
    stored = load_model(root / "model")
    model = get_algorithm(stored.algorithm).model_type.from_arrays(stored.arrays, stored.hyperparameters)

    process = start_server(root, tmp_path / "serve.log", workers=1)
    try:
        queries = rows[:50]
        status, headers, body = process.request(
            "POST", "/invocations", body=recordio_bytes(queries),
            headers={"Content-Type": "application/x-recordio-protobuf", "Accept": "application/x-recordio-protobuf"})
        assert status == 200 and headers["Content-Type"] == "application/x-recordio-protobuf"
    finally:
        assert process.stop() == 0
    got = np.array([r.label["projection"].float32_tensor.values for r in read_records(io.BytesIO(body))],
                   dtype=np.float32)
    np.testing.assert_array_equal(got, model.predict(queries)["projection"])
    # and the projection is the PCA one: centred rows onto the top principal directions
    centred = queries.astype(np.float64) - rows.astype(np.float64).mean(axis=0)
    _, _, vt = np.linalg.svd(rows.astype(np.float64) - rows.astype(np.float64).mean(axis=0), full_matrices=False)
    reference = centred @ vt[:2][::-1].T  # ascending order, as the container emits
    np.testing.assert_allclose(np.abs(got), np.abs(reference), rtol=1e-3, atol=1e-3)


# --- slow and idle clients (issue 12, item 10) ------------------------------------------------

READ_TIMEOUT_S = 4  # PIPEALGOS_REQUEST_READ_TIMEOUT of the server below; SageMaker's ping probe gives up after 2 s
PING_PROBE_S = 2


@pytest.fixture(scope="module")
def impatient_server(trained_pca, tmp_path_factory):
    """`serve` with 2 workers (the default on this 2-core machine) and a short read timeout."""
    process = start_server(trained_pca.root, tmp_path_factory.mktemp("impatient") / "serve.log",
                           env={"PIPEALGOS_REQUEST_READ_TIMEOUT": str(READ_TIMEOUT_S)})
    yield process
    assert process.stop() == 0, process.logs()


def _stalled_client(port: int, sent: bytes) -> socket.socket:
    """A connection that sent ``sent`` (part of a request) and then goes silent."""
    client = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S * 5)
    client.sendall(sent)
    return client


def _answer(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


PARTIAL_BODY = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 1000\r\n\r\n1,2,3"
PARTIAL_HEADERS = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: te"


def test_ping_answers_while_clients_idle_mid_request_then_they_are_cut_off(impatient_server, trained_pca):
    stalled = [_stalled_client(impatient_server.port, PARTIAL_BODY) for _ in range(2)]
    stalled.append(_stalled_client(impatient_server.port, PARTIAL_HEADERS))
    try:
        time.sleep(0.5)  # let the workers take them up
        for _ in range(6):  # on fresh connections, so both workers are probed
            conn = impatient_server.connection(timeout=PING_PROBE_S)
            conn.request("GET", "/ping")
            assert conn.getresponse().status == 200
            conn.close()
        answers = [_answer(client) for client in stalled]
    finally:
        for client in stalled:
            client.close()
    for answer in answers[:2]:
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"did not arrive within PIPEALGOS_REQUEST_READ_TIMEOUT=4 s" in answer
        assert b"\r\nconnection: close\r\n" in answer.lower()  # and it was: _answer read to the end
    assert answers[2] == b""  # silent mid-headers: disconnected, nothing to answer yet
    status, _, body = impatient_server.request("POST", "/invocations", b"1,2,3,4,5,6\n", {"Content-Type": "text/csv"})
    assert status == 200 and b"projection" in body
    assert "closed a connection silent for 4 s mid-request" in impatient_server.logs()
    assert "Socket error processing request" not in impatient_server.logs()


def test_a_trickling_body_is_cut_off_at_the_deadline(impatient_server):
    """One byte every 0.2 s never trips a per-read timeout; the body's deadline stops it."""
    client = _stalled_client(impatient_server.port, PARTIAL_BODY)
    try:
        answer = b""
        for _ in range(5 * READ_TIMEOUT_S * 3):  # would take 3x the deadline to finish
            try:
                client.sendall(b"0")
            except OSError:  # the server answered and closed
                break
            readable, _, _ = select.select([client], [], [], 0.2)
            if readable:
                break
        answer = _answer(client)
    finally:
        client.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer


# --- the address serve binds (issue 12, item 11) ----------------------------------------------


@pytest.mark.parametrize("env,address", [({}, "127.0.0.1"), ({"SAGEMAKER_BIND_TO_PORT": "PORT"}, "0.0.0.0")])
def test_serve_binds_loopback_unless_sagemaker_runs_it(trained_pca, tmp_path, env, address):
    process = start_server(trained_pca.root, tmp_path / "serve.log", workers=1, host=None, port_from_env=bool(env))
    try:
        assert f"Listening at: http://{address}:{process.port}" in process.logs()
    finally:
        assert process.stop() == 0


def test_default_host_is_every_interface_as_a_containers_main_process(monkeypatch):
    monkeypatch.delenv("SAGEMAKER_BIND_TO_PORT", raising=False)
    assert settings.default_host() == "127.0.0.1"
    monkeypatch.setattr(settings.os, "getpid", lambda: 1)
    assert settings.default_host() == "0.0.0.0"


def test_help_says_which_address_is_bound():
    result = subprocess.run([str(VENV_BIN / "serve"), "--help"], capture_output=True, text=True, timeout=60)
    assert "127.0.0.1" in result.stdout and "SAGEMAKER_BIND_TO_PORT" in result.stdout
