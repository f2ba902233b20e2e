"""Transform jobs end to end: real model server processes over HTTP, local folders and SeaweedFS S3."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformkit import CENTROIDS, FEATURES

from pipealgos.io import write_dense
from pipealgos.platform.transform.request import ModelSource, parse_transform_job
from pipealgos.platform.transform.transformer import TransformOptions, TransformRun
from seaweed import BUCKET

RNG = np.random.default_rng(3)


def rows(n: int) -> np.ndarray:
    """Points near the centroids, so every cluster is used."""
    return (CENTROIDS[RNG.integers(0, len(CENTROIDS), n)] + RNG.normal(0, 1, (n, FEATURES))).astype(np.float32)


def expected(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(closest cluster, distance) by the arithmetic of k-means on the centroids."""
    d = np.sqrt(((x[:, None, :].astype(np.float64) - CENTROIDS[None]) ** 2).sum(-1))
    return d.argmin(1), d.min(1)


def csv_bytes(x: np.ndarray) -> bytes:
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in x).encode()


def recordio_bytes(x: np.ndarray) -> bytes:
    out = io.BytesIO()
    write_dense(out, x)
    return out.getvalue()


def request(name: str, uri: str, output: str, content_type: str, split: str, strategy: str | None = "MultiRecord",
            accept: str = "text/csv", **extra) -> dict:
    req = {"TransformJobName": name, "ModelName": "km",
           "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}},
                              "ContentType": content_type, "SplitType": split},
           "TransformOutput": {"S3OutputPath": output, "Accept": accept, "AssembleWith": "Line"},
           "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}, **extra}
    if strategy:
        req["BatchStrategy"] = strategy
    return req


def run(req: dict, model_dir: Path, server=None):
    options = TransformOptions(progress="plain", progress_stream=io.StringIO())
    return TransformRun(parse_transform_job(req), ModelSource(str(model_dir)), options, server=server).run()


def read_csv_outputs(text: str) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([[float(v) for v in line.split(",")] for line in text.splitlines()])
    return values[:, 0].astype(int), values[:, 1]


def assert_predictions(text: str, x: np.ndarray) -> None:
    cluster, distance = read_csv_outputs(text)
    want_cluster, want_distance = expected(x)
    np.testing.assert_array_equal(cluster, want_cluster)
    np.testing.assert_allclose(distance, want_distance, rtol=1e-5)


@pytest.mark.parametrize("split, strategy, content_type", [
    ("Line", "SingleRecord", "text/csv"),
    ("Line", "MultiRecord", "text/csv"),
    ("RecordIO", "SingleRecord", "application/x-recordio-protobuf"),
    ("RecordIO", "MultiRecord", "application/x-recordio-protobuf"),
    ("None", "SingleRecord", "text/csv"),
    ("None", "MultiRecord", "application/x-recordio-protobuf"),
])
def test_every_split_type_and_batch_strategy_gives_the_model_arithmetic_in_input_order(
        tmp_path, kmeans_model, shared_server, split, strategy, content_type):
    encode = csv_bytes if content_type == "text/csv" else recordio_bytes
    parts = {"part-1": rows(40), "sub/part-2": rows(25)}
    for key, x in parts.items():
        (tmp_path / "in" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / key).write_bytes(encode(x))
    (tmp_path / "in" / ".amazon.manifest").write_text("[]")  # hidden: not an input
    result = run(request("km", str(tmp_path / "in"), str(tmp_path / "out"), content_type, split, strategy),
                 kmeans_model, shared_server)
    assert result.status == "Completed" and result.exit_status == 0, result.summary
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
                  if p.is_file()) == ["part-1.out", "sub/part-2.out"]
    for key, x in parts.items():
        assert_predictions((tmp_path / "out" / f"{key}.out").read_text(), x)
    assert result.summary["Records"] == (65 if split != "None" else 2)
    assert result.summary["BatchStrategy"] == strategy


def test_settings_come_from_execution_parameters_when_the_request_has_none(tmp_path, kmeans_model, shared_server):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_bytes(csv_bytes(rows(5)))
    result = run(request("km", str(tmp_path / "in"), str(tmp_path / "out"), "text/csv", "Line", None),
                 kmeans_model, shared_server)
    answer = shared_server.execution_parameters()
    assert result.summary["ExecutionParameters"] == answer
    assert (result.summary["BatchStrategy"], result.summary["MaxPayloadInMB"], result.summary["MaxConcurrentTransforms"]) \
        == ("MultiRecord", answer["MaxPayloadInMB"], answer["MaxConcurrentTransforms"])


def test_join_source_with_json_lines(tmp_path, kmeans_model, shared_server):
    x = rows(12)
    lines = [json.dumps({"id": f"row-{i}", "features": row.tolist()}) for i, row in enumerate(x)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rows.jsonl").write_text("\n".join(lines) + "\n")
    req = request("km", str(tmp_path / "in"), str(tmp_path / "out"), "application/jsonlines", "Line",
                  accept="application/jsonlines",
                  DataProcessing={"InputFilter": "$.features", "JoinSource": "Input",
                                  "OutputFilter": "$['id','SageMakerOutput']"})
    result = run(req, kmeans_model, shared_server)
    assert result.status == "Completed", result.summary
    joined = [json.loads(line) for line in (tmp_path / "out" / "rows.jsonl.out").read_text().splitlines()]
    cluster, distance = expected(x)
    assert [j["id"] for j in joined] == [f"row-{i}" for i in range(12)]
    assert [j["SageMakerOutput"]["closest_cluster"] for j in joined] == cluster.tolist()
    np.testing.assert_allclose([j["SageMakerOutput"]["distance_to_cluster"] for j in joined], distance, rtol=1e-5)


def test_csv_input_filter_join_and_output_filter(tmp_path, kmeans_model, shared_server):
    x = rows(9)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ids.csv").write_text("".join(f"id{i}," + ",".join(map(str, row.tolist())) + "\n"
                                                     for i, row in enumerate(x)))
    req = request("km", str(tmp_path / "in"), str(tmp_path / "out"), "text/csv", "Line", "SingleRecord",
                  DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-2]"})
    result = run(req, kmeans_model, shared_server)
    assert result.status == "Completed", result.summary
    out = [line.split(",") for line in (tmp_path / "out" / "ids.csv.out").read_text().splitlines()]
    assert out == [[f"id{i}", str(float(c))] for i, c in enumerate(expected(x)[0])]  # k-means: a float32 index


def test_gzip_input_and_a_manifest(tmp_path, kmeans_model, shared_server):
    parts = {name: rows(30) for name in ("a.csv.gz", "b.csv.gz", "c.csv.gz")}
    (tmp_path / "in").mkdir()
    for name, x in parts.items():
        (tmp_path / "in" / name).write_bytes(gzip.compress(csv_bytes(x)))
    manifest = tmp_path / "inputs.manifest"
    manifest.write_text(json.dumps([{"prefix": str(tmp_path / "in") + "/"}, "c.csv.gz", "a.csv.gz"]))
    req = request("km", str(manifest), str(tmp_path / "out"), "text/csv", "Line", "MultiRecord")
    req["TransformInput"]["CompressionType"] = "Gzip"
    req["TransformInput"]["DataSource"]["S3DataSource"]["S3DataType"] = "ManifestFile"
    result = run(req, kmeans_model, shared_server)
    assert result.status == "Completed", result.summary
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.csv.gz.out", "c.csv.gz.out"]
    for name in ("a.csv.gz", "c.csv.gz"):
        assert_predictions((tmp_path / "out" / f"{name}.out").read_text(), parts[name])


def test_s3_input_and_output(s3env, kmeans_model, shared_server):
    client = s3env.client()
    x = rows(50)
    client.put_object(Bucket=BUCKET, Key="transform/s3-in/part-1.pbr", Body=recordio_bytes(x))
    req = request("km-s3", f"s3://{BUCKET}/transform/s3-in/", f"s3://{BUCKET}/transform/s3-out", 
                  "application/x-recordio-protobuf", "RecordIO", "MultiRecord")
    result = run(req, kmeans_model, shared_server)
    assert result.status == "Completed", result.summary
    body = client.get_object(Bucket=BUCKET, Key="transform/s3-out/part-1.pbr.out")["Body"].read()
    assert_predictions(body.decode(), x)


def test_a_failing_record_fails_the_job_naming_object_and_line_and_leaves_no_out(tmp_path, kmeans_model,
                                                                                  shared_server):
    good, bad = rows(10), rows(10)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_bytes(csv_bytes(good))
    lines = csv_bytes(bad).decode().splitlines()
    lines[6] = "1.0,2.0,3.0"  # three features, the model takes four
    (tmp_path / "in" / "b.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.csv.out").write_text("an earlier run's output\n")
    req = request("km", str(tmp_path / "in"), str(tmp_path / "out"), "text/csv", "Line", "MultiRecord")
    result = run(req, kmeans_model, shared_server)
    assert (result.status, result.exit_status) == ("Failed", 1)
    reason = result.summary["FailureReason"]
    assert f"{tmp_path / 'in' / 'b.csv'}: line 7: the model server answered 400" in reason, reason
    assert "4" in reason.split("answered 400", 1)[1]  # the server's message: the expected feature count
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.csv.out"]
    assert_predictions((tmp_path / "out" / "a.csv.out").read_text(), good)


def test_a_stopped_job_is_stopped_exit_3_and_leaves_no_out(tmp_path, kmeans_model, shared_server):
    """StopTransformJob (Ctrl-C / SIGTERM to `pipealgos transform`): nothing more is sent, the
    summary says Stopped, exit 3, and no input keeps a complete-looking .out (an earlier run's
    included)."""
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "in" / f"{name}.csv").write_bytes(csv_bytes(rows(20)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.csv.out").write_text("an earlier run's output\n")
    req = request("km-stop", str(tmp_path / "in"), str(tmp_path / "out"), "text/csv", "Line", "SingleRecord")
    options = TransformOptions(progress="plain", progress_stream=io.StringIO())
    job = TransformRun(parse_transform_job(req), ModelSource(str(kmeans_model)), options, server=shared_server)
    job.request_stop("SIGTERM")
    result = job.run()
    assert (result.status, result.exit_status) == ("Stopped", 3), result.summary
    assert not list((tmp_path / "out").iterdir())


def test_bad_recordio_data_fails_naming_object_and_offset(tmp_path, kmeans_model, shared_server):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.pbr").write_bytes(recordio_bytes(rows(3)) + b"garbage!")
    req = request("km", str(tmp_path / "in"), str(tmp_path / "out"), "application/x-recordio-protobuf", "RecordIO")
    result = run(req, kmeans_model, shared_server)
    assert result.status == "Failed"
    assert "x.pbr: not a RecordIO frame at byte offset" in result.summary["FailureReason"]
    assert not list((tmp_path / "out").iterdir())


def test_an_empty_input_fails_before_the_server_starts(tmp_path, kmeans_model):
    req = request("km", str(tmp_path / "nothing-here"), str(tmp_path / "out"), "text/csv", "Line")
    result = run(req, kmeans_model)
    assert result.status == "Failed" and "no objects found" in result.summary["FailureReason"]
    assert result.summary["ServerStartSeconds"] is None


def test_a_model_the_server_cannot_load_fails_with_its_log(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "manifest.json").write_text("{not json")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_bytes(csv_bytes(rows(2)))
    result = run(request("km", str(tmp_path / "in"), str(tmp_path / "out"), "text/csv", "Line"), tmp_path / "model")
    assert result.status == "Failed"
    assert "exited with status" in result.summary["FailureReason"]
    assert "manifest.json" in result.summary["FailureReason"]


def cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipealgos.cli", "transform", *args, "--progress", "plain"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def test_cli_runs_a_boto3_request_with_the_model_archive_in_s3(tmp_path, seaweed, kmeans_archive):
    client = seaweed.client()
    x = rows(20)
    client.put_object(Bucket=BUCKET, Key="transform/cli/model.tar.gz", Body=kmeans_archive.read_bytes())
    client.put_object(Bucket=BUCKET, Key="transform/cli/in/rows.csv", Body=csv_bytes(x))
    req = request("km-cli", f"s3://{BUCKET}/transform/cli/in/", f"s3://{BUCKET}/transform/cli/out/", "text/csv",
                  "Line", "MultiRecord", MaxConcurrentTransforms=2, MaxPayloadInMB=1)
    (tmp_path / "job.json").write_text(json.dumps(req))
    (tmp_path / "km.json").write_text(json.dumps({"ModelName": "km", "PrimaryContainer": {
        "Image": "174872318107.dkr.ecr.us-west-2.amazonaws.com/kmeans:1",
        "ModelDataUrl": f"s3://{BUCKET}/transform/cli/model.tar.gz"}}))
    done = cli([str(tmp_path / "job.json"), "--summary", str(tmp_path / "summary.json")], seaweed.env())
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert (summary["TransformJobStatus"], summary["Records"], summary["MaxConcurrentTransforms"]) == \
        ("Completed", 20, 2)
    assert "[serve]" in done.stderr and "records/s" in done.stderr
    body = client.get_object(Bucket=BUCKET, Key="transform/cli/out/rows.csv.out")["Body"].read()
    assert_predictions(body.decode(), x)


def test_cli_refuses_a_bad_request_with_exit_status_2(tmp_path):
    req = request("km", "in/", "out/", "text/csv", "Line", "Sometimes")
    (tmp_path / "job.json").write_text(json.dumps(req))
    done = cli([str(tmp_path / "job.json"), "--model", str(tmp_path)])
    assert done.returncode == 2
    assert "$.BatchStrategy: 'Sometimes' is not one of" in done.stderr
