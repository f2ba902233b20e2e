"""`make demo`: the whole path a SageMaker user takes, on this machine, with local files.

1. Writes a dataset of 10-feature records around 4 planted cluster centres as 8
   RecordIO-protobuf shards (with the SDK's `.amazon.manifest`) under demo-out/data/.
2. Writes a CreateTrainingJob request (the JSON a boto3 user passes to
   `create_training_job`): k-means image, Pipe mode, 2 instances, ShardedByS3Key, the
   manifest's local path as S3Uri (local files are the embedded default).
3. Runs it with `pipealgos run` (FIFOs fed in parallel, 2 hosts over torch.distributed),
   which packs model.tar.gz under the output path.
4. Starts `serve` on that model.tar.gz and scores a few rows over HTTP in JSON, CSV and
   RecordIO-protobuf, printing what came back.
5. Scores the whole dataset with a CreateTransformJob request run by `pipealgos transform`
   (batch transform: `serve` in a subprocess, the shards split by RecordIO record and POSTed
   in multi-record requests, one `.out` per shard), and prints the first answers.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from pipealgos.io import write_dense
from pipealgos.io.protobuf import parse_record
from pipealgos.io.recordio import iter_records
from pipealgos.platform.runner.hosts import free_port

OUT = Path("demo-out").resolve()
BIN = Path(sys.executable).parent
CENTRES = np.array([[0.0] * 10, [8.0] * 10, [0.0] * 5 + [8.0] * 5, [8.0] * 5 + [0.0] * 5], dtype=np.float32)


def write_dataset(folder: Path) -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, len(CENTRES), size=40_000)
    x = (CENTRES[labels] + rng.normal(scale=0.5, size=(len(labels), 10))).astype(np.float32)
    folder.mkdir(parents=True)
    entries = [{"prefix": f"{folder.as_uri()}/"}]
    for i, rows in enumerate(np.array_split(np.arange(len(x)), 8)):
        name = f"matrix_{i}.pbr"
        with open(folder / name, "wb") as f:
            write_dense(f, x[rows])
        entries.append(name)
    (folder / ".amazon.manifest").write_text(json.dumps(entries))
    print(f"demo: {len(x)} records in 8 shards + .amazon.manifest under {folder}")


def job_request(data: Path) -> dict:
    return {
        "TrainingJobName": "demo-kmeans",
        "AlgorithmSpecification": {"TrainingImage": "pipealgos/kmeans:1", "TrainingInputMode": "Pipe"},
        "HyperParameters": {"k": "4", "feature_dim": "10", "mini_batch_size": "1000", "epochs": "2",
                            "force_dense": "True"},
        "InputDataConfig": [{
            "ChannelName": "train",
            "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": str(data / ".amazon.manifest"),
                                            "S3DataDistributionType": "ShardedByS3Key"}},
        }],
        "OutputDataConfig": {"S3OutputPath": str(OUT / "output")},
        "ResourceConfig": {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "RoleArn": "arn:aws:iam::111122223333:role/demo",
    }


def post(url: str, body: bytes, content_type: str, accept: str) -> bytes:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type, "Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def predict_over_http(model_tar: Path) -> None:
    serve_root = OUT / "serve"
    (serve_root / "model").mkdir(parents=True)
    shutil.copy(model_tar, serve_root / "model" / "model.tar.gz")  # as SageMaker puts ModelDataUrl there
    port = free_port()
    env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
    server = subprocess.Popen([str(BIN / "serve"), "--ml-root", str(serve_root)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        print(f"\nserve: {base}/ping answers 200; scoring the 4 planted centres and one far-off point")
        rows = np.vstack([CENTRES, np.full((1, 10), 30.0, np.float32)])
        body = json.dumps({"instances": [{"features": r.tolist()} for r in rows]}).encode()
        print("JSON  ->", post(f"{base}/invocations", body, "application/json", "application/json").decode())
        csv = "\n".join(",".join(f"{v:g}" for v in r) for r in rows).encode()
        print("CSV   ->", post(f"{base}/invocations", csv, "text/csv", "application/jsonlines").decode().strip()
              .replace("\n", "\n         "))
        buffer = io.BytesIO()
        write_dense(buffer, rows)
        answer = post(f"{base}/invocations", buffer.getvalue(), "application/x-recordio-protobuf",
                      "application/x-recordio-protobuf")
        records = [parse_record(r) for r in iter_records(io.BytesIO(answer))]
        print(f"RecordIO-protobuf -> {len(answer)} bytes, {len(records)} Records; label['closest_cluster']:",
              [r.label["closest_cluster"].float32_tensor.values[0] for r in records])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    write_dataset(OUT / "data")
    job_file = OUT / "job.json"
    job_file.write_text(json.dumps(job_request(OUT / "data"), indent=2))
    print(f"demo: CreateTrainingJob request in {job_file}; running `pipealgos run {job_file.name}`\n")
    status = subprocess.call([str(BIN / "pipealgos"), "run", str(job_file), "--progress", "plain",
                              "--summary", str(OUT / "summary.json")])
    if status != 0:
        print(f"demo: the training job failed (exit {status})", file=sys.stderr)
        return status
    model_tar = OUT / "output" / "demo-kmeans" / "output" / "model.tar.gz"
    print(f"\ndemo: model packed at {model_tar}")
    predict_over_http(model_tar)
    return batch_transform(model_tar, OUT / "data")


def batch_transform(model_tar: Path, data: Path) -> int:
    """The dataset scored by batch transform: a CreateTransformJob request over the local shards."""
    request = {
        "TransformJobName": "demo-kmeans-transform",
        "ModelName": "demo-kmeans",
        "BatchStrategy": "MultiRecord",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{data.as_uri()}/"}},
                           "ContentType": "application/x-recordio-protobuf", "SplitType": "RecordIO"},
        "TransformOutput": {"S3OutputPath": str(OUT / "transform"), "Accept": "application/jsonlines",
                            "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }
    job_file = OUT / "transform-job.json"
    job_file.write_text(json.dumps(request, indent=2))
    print(f"\ndemo: CreateTransformJob request in {job_file}; running `pipealgos transform {job_file.name}`\n")
    status = subprocess.call([str(BIN / "pipealgos"), "transform", str(job_file), "--model", str(model_tar),
                              "--progress", "plain"])
    if status != 0:
        print(f"demo: the transform job failed (exit {status})", file=sys.stderr)
        return status
    outputs = sorted((OUT / "transform").rglob("*.out"))
    print(f"\ndemo: {len(outputs)} .out files under {OUT / 'transform'}; the first answers of {outputs[0].name}:")
    with open(outputs[0]) as answers:
        for _ in range(3):
            print("  " + answers.readline().rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
