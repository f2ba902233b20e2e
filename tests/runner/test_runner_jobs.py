"""Whole jobs against a real SeaweedFS server: `train` runs as real processes per host."""

import gzip
import io
import tarfile

import numpy as np

from jobkit import dense_bytes, pca_request, reference_pca, upload_parts
from pipealgos.io import record_pb2
from pipealgos.io.convert import convert
from pipealgos.platform.runner.job import parse_job
from pipealgos.platform.runner.runner import RunOptions, run_job
from seaweed import BUCKET

RNG = np.random.default_rng(7)
X = (RNG.normal(size=(1200, 6)) @ RNG.normal(size=(6, 6)) + 3).astype(np.float32)


def model_from_s3(server, result) -> dict[str, np.ndarray]:
    uri = result.summary["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, key = uri[len("s3://"):].split("/", 1)
    body = server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = sorted(tar.getnames())
        assert names == ["manifest.json", "model_algo-1.npz"], names  # only algo-1 writes the model
        data = tar.extractfile("model_algo-1.npz").read()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def options(**extra) -> RunOptions:
    return RunOptions(progress="plain", **extra)


def test_sdk_manifest_upload_trains_in_pipe_mode(s3env, tmp_path):
    from sagemaker.amazon.amazon_estimator import upload_numpy_to_s3_shards

    manifest = upload_numpy_to_s3_shards(4, s3env.resource(), BUCKET, "sdk/train", X)
    assert manifest.endswith("/.amazon.manifest")
    request = pca_request("sdk-manifest", manifest, f"s3://{BUCKET}/out", mode="Pipe", data_type="ManifestFile",
                          distribution="ShardedByS3Key")
    result = run_job(parse_job(request), options())
    assert result.status == "Completed", result.summary
    summary = result.summary
    assert summary["Channels"]["train"]["Objects"] == 4 and summary["PeakLocalDiskBytes"] < 100_000
    assert summary["TimeToFirstByteSeconds"] > 0 and summary["Channels"]["train"]["Bytes"] > X.nbytes
    model = model_from_s3(s3env, result)
    s, v = reference_pca(X, 3)
    np.testing.assert_allclose(model["s"], s, rtol=1e-4)
    np.testing.assert_allclose(np.abs(model["v"]), np.abs(v), atol=1e-4)  # signs follow a convention
    np.testing.assert_allclose(model["mean"][0], X.mean(axis=0), rtol=1e-5)
    output = s3env.client().head_object(Bucket=BUCKET, Key="out/sdk-manifest/output/output.tar.gz")
    assert output["ContentLength"] > 0


def test_multi_host_models_equal_the_single_host_model(s3env, tmp_path):
    parts = [dense_bytes(X[i::7]) for i in range(7)]
    plain = upload_parts(s3env, "multi/plain", parts)
    zipped = upload_parts(s3env, "multi/gzip", [gzip.compress(p) for p in parts], name="part-{:03d}.pbr.gz")
    single = run_job(parse_job(pca_request("one-host", plain, str(tmp_path / "out"))), options())
    assert single.status == "Completed", single.summary
    reference = model_from_local(tmp_path / "out" / "one-host")
    pipe = pca_request("three-hosts-pipe", zipped, str(tmp_path / "out"), mode="Pipe", hosts=3,
                       distribution="ShardedByS3Key",
                       channel_extra={"CompressionType": "Gzip", "ShuffleConfig": {"Seed": 11}})
    file = pca_request("two-hosts-file", plain, str(tmp_path / "out"), hosts=2, distribution="ShardedByS3Key")
    for request in (pipe, file):
        result = run_job(parse_job(request), options())
        assert result.status == "Completed", result.summary
        model = model_from_local(tmp_path / "out" / request["TrainingJobName"])
        for name in ("s", "v", "mean"):
            np.testing.assert_allclose(model[name], reference[name], rtol=1e-6, atol=1e-6 * np.abs(reference[name]).max())
    assert result.summary["PeakLocalDiskBytes"] >= sum(map(len, parts))  # File mode downloads first


def model_from_local(job_out) -> dict[str, np.ndarray]:
    with tarfile.open(job_out / "output" / "model.tar.gz", "r:gz") as tar:
        assert "model_algo-1.npz" in tar.getnames()
        data = tar.extractfile("model_algo-1.npz").read()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def test_recordio_wrapper_makes_each_object_one_record(s3env, tmp_path):
    x = X[:40]
    payloads = []
    for row in x:
        record = record_pb2.Record()
        record.features["values"].float32_tensor.values.extend(row.tolist())
        payloads.append(record.SerializeToString())
    uri = upload_parts(s3env, "wrapped", payloads, name="row-{:03d}.bin")
    request = pca_request("wrapped", uri, str(tmp_path / "out"), mode="Pipe",
                          channel_extra={"RecordWrapperType": "RecordIO"})
    result = run_job(parse_job(request), options())
    assert result.status == "Completed", result.summary
    model = model_from_local(tmp_path / "out" / "wrapped")
    np.testing.assert_allclose(model["mean"][0], x.mean(axis=0), rtol=1e-5)


def test_local_paths_need_no_server_and_checkpoints_sync(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"part-{i}.pbr").write_bytes(dense_bytes(X[i::3]))
    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    (checkpoints / "state-0.bin").write_bytes(b"earlier run")
    request = pca_request("local", "file://" + str(data), str(tmp_path / "out"), mode="Pipe")
    request["CheckpointConfig"] = {"S3Uri": str(checkpoints)}
    result = run_job(parse_job(request), options(work_dir=tmp_path / "work", keep_work_dir=True))
    assert result.status == "Completed" and result.exit_status == 0
    assert (tmp_path / "out" / "local" / "output" / "model.tar.gz").exists()
    local = tmp_path / "work" / "local" / "algo-1" / "checkpoints" / "state-0.bin"
    assert local.read_bytes() == b"earlier run"  # pre-filled before `train` started
    log = capsys.readouterr().err
    assert "[algo-1]" in log and "[runner]" in log and "train (Pipe)" in log


def test_a_converted_folder_with_its_manifest_trains_in_pipe_mode(tmp_path):
    csv = tmp_path / "rows.csv"
    np.savetxt(csv, X, delimiter=",", fmt="%.6f")
    result = convert([csv], tmp_path / "shards", shards=3, manifest_prefix="s3://bucket/shards/")
    assert result.manifest.name == ".amazon.manifest"
    request = pca_request("converted", str(tmp_path / "shards"), str(tmp_path / "out"), mode="Pipe")
    result = run_job(parse_job(request), options())
    assert result.status == "Completed", result.failure
    assert result.summary["Channels"]["train"]["Objects"] == 3  # the shards, not the manifest
