"""The SageMaker Python SDK v2's local mode, unmodified, driving the image end to end.

The SDK calls `docker-compose`, which talks to the Docker API; here `podman system service`
provides that API on a socket of our own (DOCKER_HOST). The SDK's telemetry is turned off in
its config (TelemetryOptOut) and AWS credentials are dummies: nothing leaves the machine.
Containers the SDK's compose files started, and the `sagemaker-local` network if compose made
it, are removed by id afterwards (the SDK leaves stopped training containers behind).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from image_helpers import free_port, podman, require_serve
from image_jobs import pca_job
from mlroot import recordio_bytes

from pipealgos.platform.model_store import load_model

SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
COMPOSE_NETWORK = "sagemaker-local"


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory):
    """``unix://…`` of a `podman system service` started (and stopped, by PID) for this module."""
    folder = tmp_path_factory.mktemp("podman-api")
    sock = folder / "podman.sock"
    with open(folder / "service.log", "wb") as log:
        service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _accepts(sock):
            assert service.poll() is None and time.monotonic() < deadline, (folder / "service.log").read_text()
            time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        service.terminate()
        try:
            service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


def _accepts(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect(str(sock))
            return True
        except OSError:
            return False


@pytest.fixture
def sdk_environment(docker_host, tmp_path):
    """Environment for the SDK and the docker-compose it runs; restores ours afterwards."""
    saved = dict(os.environ)
    os.environ.update({
        "DOCKER_HOST": docker_host,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local-mode-dummy",  # the SDK copies these into the containers
        "AWS_SECRET_ACCESS_KEY": "local-mode-dummy",
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
    })
    had_network = podman("network", "exists", COMPOSE_NETWORK, check=False).returncode == 0
    root = tmp_path / "sdk-containers"
    root.mkdir()
    try:
        yield root
    finally:
        _remove_compose_containers(root)
        if not had_network:
            podman("network", "rm", "-f", COMPOSE_NETWORK, check=False)
        os.environ.clear()
        os.environ.update(saved)


def _remove_compose_containers(root: Path) -> None:
    for container in json.loads(podman("ps", "-a", "--format", "json").stdout or "[]"):
        working_dir = (container.get("Labels") or {}).get("com.docker.compose.project.working_dir", "")
        if working_dir.startswith(str(root)):
            podman("rm", "-f", "-t", "0", container["Id"], check=False)


def test_sdk_local_mode_fit_deploy_predict(image, image_has_serve, sdk_environment, tmp_path):
    require_serve(image_has_serve)
    from sagemaker.deserializers import RecordDeserializer
    from sagemaker.estimator import Estimator
    from sagemaker.local import LocalSession
    from sagemaker.serializers import RecordSerializer

    hyperparameters, x = pca_job()
    data = tmp_path / "train"
    data.mkdir()
    (data / "part-0.pbr").write_bytes(recordio_bytes(x))
    output = tmp_path / "output"
    output.mkdir()

    session = LocalSession(sagemaker_config=SDK_CONFIG)
    session.config = {"local": {"local_code": True, "container_root": str(sdk_environment),
                                "serving_port": free_port()}}
    estimator = Estimator(image_uri=image, role="arn:aws:iam::111111111111:role/LocalModeRole",
                          instance_count=1, instance_type="local", hyperparameters=hyperparameters,
                          environment={"PIPEALGOS_ALGORITHM": "pca"}, output_path=f"file://{output}",
                          sagemaker_session=session)
    estimator.fit({"train": f"file://{data}"})

    with tarfile.open(estimator.model_data.removeprefix("file://")) as archive:  # model.tar.gz
        archive.extractall(tmp_path / "model", filter="data")
    arrays = load_model(tmp_path / "model").arrays

    predictor = estimator.deploy(1, "local", serializer=RecordSerializer(), deserializer=RecordDeserializer())
    try:
        records = predictor.predict(x[:4])
    finally:
        predictor.delete_endpoint()

    got = np.array([list(r.label["projection"].float32_tensor.values) for r in records])
    expected = (x[:4].astype(np.float64) - arrays["mean"]) @ arrays["v"].astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
