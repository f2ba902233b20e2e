"""Batch transform throughput: ``pipealgos transform`` against in-process ``predict`` on the same rows.

Data: ``--rows`` (default 1,000,000) x 50 float32 rows from a mixture of Gaussians, written as
RecordIO-protobuf in 4 files; a k-means model with k = 10 of the mixture's centers.

* Transform: a CreateTransformJob request (``SplitType: RecordIO``, ``BatchStrategy:
  MultiRecord``, ``MaxPayloadInMB`` 6, the server's ``MaxConcurrentTransforms``, ``Accept``
  as given, default ``application/x-recordio-protobuf``) run by :class:`TransformRun` exactly
  as ``pipealgos transform`` runs it: ``serve`` in a subprocess (gunicorn, its default
  workers), every request over HTTP, the outputs written as ``<file>.out``. Records/s is
  counted from the first request to the last answer (the summary's ``RecordsPerSecond``);
  the server's start-up is reported beside it. Every row's answer is counted in the ``.out``
  files and a sample of 2,000 is checked against in-process ``predict``.
* In process: the same files read and decoded by the project's reader
  (:func:`pipealgos.io.channel.iter_minibatches`, 5,000 rows at a time) and passed to the
  model's ``predict`` in this process, the outputs kept: the work a transform replaces.
  ``predict`` alone on the rows already in memory is reported too.

Goal (issue 17): transform records/s >= 0.5 x in-process (read + decode + predict). The
result goes to the ``transform`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np

import _results
from pipealgos.algorithms.kmeans import KMeansModel
from pipealgos.io import write_dense
from pipealgos.io.channel import ChannelSpec, iter_minibatches
from pipealgos.io.protobuf import parse_record
from pipealgos.io.recordio import iter_records
from pipealgos.platform.model_store import save_model
from pipealgos.platform.transform.request import ModelSource, parse_transform_job
from pipealgos.platform.transform.transformer import TransformOptions, TransformRun

FEATURES, K, FILES, MINIBATCH = 50, 10, 4, 5000
RECORDIO = "application/x-recordio-protobuf"
GOAL = 0.5


def make_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(K, FEATURES)).astype(np.float32)
    return centers, centers[rng.integers(0, K, rows)] + rng.standard_normal((rows, FEATURES), dtype=np.float32)


def write_files(x: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, part in enumerate(np.array_split(x, FILES)):
        out = io.BytesIO()
        write_dense(out, part)
        (folder / f"part-{i}.pbr").write_bytes(out.getvalue())


def in_process(folder: Path, model: KMeansModel) -> float:
    """Seconds to read, decode and predict every row of the files in this process."""
    spec = ChannelSpec(folder.name, folder.parent, "File", "application/x-recordio-protobuf")  # reads parent/name/
    started = time.perf_counter()
    outputs = [model.predict(batch.features) for batch in iter_minibatches(spec, 0, MINIBATCH, FEATURES)]
    elapsed = time.perf_counter() - started
    assert sum(len(o["closest_cluster"]) for o in outputs) > 0
    return elapsed


def predict_only(x: np.ndarray, model: KMeansModel) -> float:
    started = time.perf_counter()
    for start in range(0, len(x), MINIBATCH):
        model.predict(x[start:start + MINIBATCH])
    return time.perf_counter() - started


def check_outputs(out: Path, x: np.ndarray, model: KMeansModel, sample: int = 2000) -> None:
    """Every row has an answer, and a sample of them is the in-process ``closest_cluster``."""
    answers = []
    for path in sorted(out.glob("*.out")):
        with open(path, "rb") as f:
            answers.extend(iter_records(f, str(path)))
    if len(answers) != len(x):
        raise SystemExit(f"the transform wrote {len(answers)} answers for {len(x)} rows")
    picked = np.random.default_rng(1).choice(len(x), sample, replace=False)
    got = [parse_record(answers[i]).label["closest_cluster"].float32_tensor.values[0] for i in picked]
    want = model.predict(x[picked])["closest_cluster"]
    if not np.array_equal(np.array(got, np.float32), want):
        raise SystemExit("the transform's closest_cluster differs from in-process predict")


def transform(folder: Path, model_dir: Path, out: Path, accept: str) -> dict:
    request = {"TransformJobName": "bench", "ModelName": "kmeans",
               "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": str(folder)}},
                                  "ContentType": "application/x-recordio-protobuf", "SplitType": "RecordIO"},
               "TransformOutput": {"S3OutputPath": str(out), "Accept": accept},
               "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
               "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6}
    options = TransformOptions(progress="plain", progress_interval=30.0)
    result = TransformRun(parse_transform_job(request), ModelSource(str(model_dir)), options).run()
    if result.status != "Completed":
        raise SystemExit(f"the transform job failed: {result.failure}")
    return result.summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--accept", default=RECORDIO, help="Accept of the transform (outputs are checked for RecordIO)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    centers, x = make_data(args.rows)
    model = KMeansModel(centers)
    with tempfile.TemporaryDirectory(prefix="bench-transform-") as tmp:
        root = Path(tmp)
        write_files(x, root / "in")
        save_model(root / "model", "kmeans", {"k": K, "feature_dim": FEATURES}, model.to_arrays(), feature_dim=FEATURES)
        predict_only(x[:MINIBATCH], model)  # warm-up (torch's thread pool)
        local_s = in_process(root / "in", model)
        predict_s = predict_only(x, model)
        summary = transform(root / "in", root / "model", root / "out", args.accept)
        if args.accept == RECORDIO:
            check_outputs(root / "out", x, model)
    local_rate = args.rows / local_s
    ratio = summary["RecordsPerSecond"] / local_rate
    verdict = "met" if ratio >= GOAL else "NOT met"
    text = "\n".join([
        f"Machine: {_results.machine()}.",
        f"{args.rows:,} rows x {FEATURES} float32 features in {FILES} RecordIO-protobuf files, k-means k = {K}; "
        f"transform: SplitType RecordIO, MultiRecord, MaxPayloadInMB {summary['MaxPayloadInMB']}, "
        f"MaxConcurrentTransforms {summary['MaxConcurrentTransforms']} (the server's answer), Accept {args.accept}.",
        "",
        "| | records/s | seconds |",
        "|---|---|---|",
        f"| `pipealgos transform` (first request to last answer, {summary['Requests']} requests) | "
        f"{summary['RecordsPerSecond']:,.0f} | {summary['TransformSeconds']:.2f} |",
        f"| in process: read + decode + `predict` | {local_rate:,.0f} | {local_s:.2f} |",
        f"| in process: `predict` alone on rows in memory | {args.rows / predict_s:,.0f} | {predict_s:.2f} |",
        "",
        f"Transform / in process (read + decode + predict): **{ratio:.2f}x** (goal >= {GOAL}x: {verdict}); "
        f"against `predict` alone: {summary['RecordsPerSecond'] / (args.rows / predict_s):.2f}x. "
        f"The model server's start-up, not counted above: {summary['ServerStartSeconds']:.1f} s; "
        f"the whole job: {summary['TotalSeconds']:.1f} s.",
    ])
    print(text)
    if not args.no_record:
        _results.record_section("transform", text, "## batch transform (`benchmarks/transform.py`)")


if __name__ == "__main__":
    main()
