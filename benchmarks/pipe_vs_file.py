"""Pipe mode vs File mode, the AWS blog's seed experiment scaled down to this machine.

The blog trained PCA and k-means on 78.1 GiB of RecordIO-protobuf in 1,674 files: Pipe mode
cut start-up from 11.5 to 1.5 minutes, more than doubled read throughput and cut total time
by up to 35%. Here: ``--size-gb`` (default 2) of dense 50-feature records in ``--files``
(default 100) objects in a SeaweedFS server on loopback, the same job run by ``pipealgos run``
in File mode and in Pipe mode, and the server's own parallel ranged-GET throughput measured
in the same run as the ceiling.

Figures per job: time to first byte delivered to the algorithm (Pipe: first byte written to
the FIFO; File: the download finished, since the algorithm can start only then), the same
counted from the moment the algorithm opened its FIFO (Pipe only: the data latency, without
the ``train`` process start-up that both modes pay alike), total job time, read throughput
(bytes over the time data was flowing), and peak local disk used by the job's folders.

The SeaweedFS launcher is the test suite's (``tests/runner/seaweed.py``), so the benchmark
and the tests start the server the same way. Results go to the ``pipe_vs_file`` section of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "runner"))

import _results  # noqa: E402
from seaweed import BUCKET, SeaweedServer  # noqa: E402

from pipealgos.io import write_dense  # noqa: E402
from pipealgos.platform.registry import ALGORITHMS  # noqa: E402
from pipealgos.platform.runner.job import parse_job  # noqa: E402
from pipealgos.platform.runner.runner import RunOptions, run_job  # noqa: E402
from pipealgos.platform.runner.feeder import FeedOptions, PipeFeeder  # noqa: E402
from pipealgos.platform.runner.storage import S3Store  # noqa: E402

FEATURES = 50
MB = 1e6

NOTES = (
    "Reading the figures: Pipe \"read MB/s\" is the rate at which the algorithm drained its FIFO (bytes over "
    "the time data flowed), File \"read MB/s\" the download rate. File \"data ready\" is when the download "
    "finished (training starts only then); Pipe's is the first byte in the FIFO, which waits for `train` to "
    "start (Python and torch imports), so the data latency proper is the next column. In a Pipe job the S3 "
    "server, the feeder and `train` run at the same time on the same cores: its throughput is at most the "
    "cores divided by the sum of their CPU seconds per GB (the lines above; `train`'s include its start-up). "
    "The ceiling alone keeps nearly both cores busy with the server and the GETs, so Pipe at 0.9 of it would "
    "need about twice the cores this machine has. A File job downloads first (server and GETs busy), then "
    "trains (`train` busy): Pipe total / File total can fall only by the share of the File job spent "
    "downloading, small over loopback, unlike the blog's 78 GiB from S3."
)

HYPERPARAMETERS = {
    "pca": {"feature_dim": str(FEATURES), "num_components": "10", "mini_batch_size": "5000"},
    "kmeans": {"feature_dim": str(FEATURES), "k": "10", "mini_batch_size": "5000", "epochs": "1"},
}


def upload(server: SeaweedServer, size_gb: float, files: int) -> tuple[int, int]:
    """Upload ``files`` objects of dense 50-feature records totalling about ``size_gb`` GB."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(FEATURES, FEATURES)).astype(np.float32)
    one = io.BytesIO()
    write_dense(one, np.zeros((1, FEATURES), np.float32))
    rows = max(1, int(size_gb * 1e9 / files / len(one.getvalue())))
    client = server.client()
    total = 0

    def put(i: int) -> int:
        x = np.random.default_rng(i).normal(size=(rows, FEATURES)).astype(np.float32) @ basis
        out = io.BytesIO()
        write_dense(out, x)
        client.put_object(Bucket=BUCKET, Key=f"bench/train/part-{i:05d}.pbr", Body=out.getvalue())
        return out.tell()

    with ThreadPoolExecutor(4) as pool:
        total = sum(pool.map(put, range(files)))
    return total, rows * files


class CpuMeter:
    """CPU seconds (user + system) spent between start and stop by the S3 server's process, by
    this process (the runner, the feeder's threads, the ceiling's GETs) and by the children it
    reaped (the `train` processes), beside the wall time."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.start = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        with open(f"/proc/{self.server_pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return time.monotonic(), server, own.user + own.system, own.children_user + own.children_system

    def stop(self) -> dict[str, float]:
        end = self._read()
        wall, server, here, children = (b - a for a, b in zip(self.start, end))
        return {"wall": wall, "server": server, "client": here, "train": children}


def cpu_note(label: str, cpu: dict[str, float], nbytes: float) -> str:
    busy = (cpu["server"] + cpu["client"] + cpu["train"]) / cpu["wall"]
    per_gb = {k: cpu[k] / (nbytes / 1e9) for k in ("server", "client", "train")}
    return (f"- {label}: **{busy:.2f} of {os.cpu_count()} cores busy**; CPU seconds per GB delivered: "
            f"S3 server {per_gb['server']:.2f}, runner/feeder/GETs {per_gb['client']:.2f}, "
            f"`train` {per_gb['train']:.2f}")


def get_ceiling(server: SeaweedServer, feed: FeedOptions, workers: int) -> tuple[float, dict[str, float], int]:
    """MB/s of parallel ranged GETs over every object, data discarded: what the server can give;
    with the CPU it took and the bytes read."""
    store = S3Store(server.endpoint, max_connections=workers * 2)
    objects = store.list_prefix(f"s3://{BUCKET}/bench/train/")
    ranges = [(o.uri, start, min(o.size, start + feed.chunk_size)) for o in objects
              for start in range(0, o.size, feed.chunk_size)]
    meter = CpuMeter(server.proc.pid)
    with ThreadPoolExecutor(workers) as pool:
        total = sum(len(data) for data in pool.map(lambda r: store.read_range(*r), ranges))
    cpu = meter.stop()
    return total / MB / cpu["wall"], cpu, total


def feeder_only(server: SeaweedServer, feed: FeedOptions, folder: Path) -> float:
    """MB/s the Pipe feeder delivers into a FIFO whose reader discards the bytes (no algorithm)."""
    store = S3Store(server.endpoint)
    objects = store.list_prefix(f"s3://{BUCKET}/bench/train/")
    failures: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    feeder = PipeFeeder("bench", "train", folder, store, lambda epoch: objects, False, feed, failures.append)
    feeder.start()
    fifo = folder / "train_0"
    while not fifo.exists():
        time.sleep(0.001)
    total = 0
    with open(fifo, "rb", buffering=0) as stream:
        started = time.monotonic()
        while chunk := stream.read(1 << 20):
            total += len(chunk)
        took = time.monotonic() - started
    feeder.stop()
    feeder.join(10)
    if failures:
        raise SystemExit(f"feeder failed: {failures[0]}")
    return total / MB / took


def run_mode(algorithm: str, mode: str, work: Path, feed: FeedOptions, server: SeaweedServer) -> dict:
    request = {
        "TrainingJobName": f"bench-{algorithm}-{mode.lower()}",
        "AlgorithmSpecification": {"TrainingImage": f"{algorithm}:1", "TrainingInputMode": mode},
        "HyperParameters": HYPERPARAMETERS[algorithm],
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/bench/train/",
            "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": str(work / "out")},
        "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge"},
    }
    meter = CpuMeter(server.proc.pid)
    result = run_job(parse_job(request), RunOptions(work_dir=work / "jobs", feed=feed, progress="plain",
                                                    progress_interval=30))
    if result.status != "Completed":
        raise SystemExit(f"{algorithm} {mode}: {result.status}: {result.failure}")
    return {**result.summary, "Cpu": meter.stop()}


def row(algorithm: str, mode: str, s: dict) -> str:
    ch = s["Channels"]["train"]
    latency = ch["FirstByteAfterOpenSeconds"]
    return (f"| {algorithm} | {mode} | {s['TimeToFirstByteSeconds']:.2f} | "
            f"{'–' if latency is None else f'{latency:.4f}'} | {s['TotalSeconds']:.1f} | "
            f"{ch['ThroughputMBps']:.1f} | {s['PeakLocalDiskBytes'] / MB:,.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="data size in GB (default 2)")
    parser.add_argument("--files", type=int, default=100, help="number of objects (default 100)")
    parser.add_argument("--workers", type=int, default=8, help="parallel GETs per channel (default 8)")
    parser.add_argument("--algorithms", default="pca,kmeans", help="comma list (default pca,kmeans)")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    algorithms = [a for a in args.algorithms.split(",") if a in ALGORITHMS]
    feed = FeedOptions(workers=args.workers)
    begun = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="pipe-vs-file-") as tmp:
        work = Path(tmp)
        server = SeaweedServer(work / "seaweed")
        os.environ.update(server.env())  # the runner's boto3 finds the server and its keys here
        try:
            started = time.monotonic()
            nbytes, nrows = upload(server, args.size_gb, args.files)
            print(f"uploaded {nbytes / MB:,.0f} MB ({nrows:,} records) in {args.files} objects "
                  f"in {time.monotonic() - started:.1f} s", flush=True)
            ceiling, ceiling_cpu, ceiling_bytes = get_ceiling(server, feed, args.workers * 2)
            print(f"server parallel-GET ceiling: {ceiling:,.1f} MB/s", flush=True)
            fed = feeder_only(server, feed, work / "fifo")
            print(f"feeder into a discarding reader: {fed:,.1f} MB/s", flush=True)
            results = {}
            for algorithm in algorithms:
                for mode in ("File", "Pipe"):
                    results[algorithm, mode] = run_mode(algorithm, mode, work, feed, server)
                    print(row(algorithm, mode, results[algorithm, mode]), flush=True)
        finally:
            server.stop()

    lines = [
        "## Pipe mode vs File mode (`benchmarks/pipe_vs_file.py`)", "",
        f"`python benchmarks/pipe_vs_file.py --size-gb {args.size_gb:g} --files {args.files}` — "
        f"{nbytes / MB:,.0f} MB ({nrows:,} dense {FEATURES}-feature records) in {args.files} RecordIO-protobuf "
        f"objects in SeaweedFS (`weed mini`) on loopback, one host, {args.workers} parallel GETs of 8 MiB, "
        "64 MiB Pipe buffer cap; 2 cores shared by the server, the runner and `train`.",
        "", f"Server parallel ranged-GET ceiling, same run ({args.workers * 2} threads, data discarded): "
        f"**{ceiling:,.1f} MB/s**. The Pipe feeder alone, into a FIFO whose reader discards the bytes: "
        f"**{fed:,.1f} MB/s** = **{fed / ceiling:.2f}** of the ceiling (goal >= 0.9: "
        f"{'met' if fed / ceiling >= 0.9 else 'missed'}).", "",
        "Where the CPU goes (S3 server process, this process's threads, the `train` processes):", "",
        cpu_note("ceiling (parallel GETs, data discarded)", ceiling_cpu, ceiling_bytes),
        *(cpu_note(f"{a} {m} job", s["Cpu"], nbytes) for (a, m), s in results.items()), "",
        "| algorithm | mode | data ready (s from job start) | first byte after FIFO open (s) "
        "| total (s) | read MB/s | peak disk (MB) |",
        "|---|---|---:|---:|---:|---:|---:|",
        *(row(a, m, s) for (a, m), s in results.items()), "",
    ]
    for algorithm in algorithms:
        f, p = results[algorithm, "File"], results[algorithm, "Pipe"]
        latency = p["Channels"]["train"]["FirstByteAfterOpenSeconds"]
        ratio_total = p["TotalSeconds"] / f["TotalSeconds"]
        ratio_ceiling = p["Channels"]["train"]["ThroughputMBps"] / ceiling
        lines += [
            f"- {algorithm}: Pipe first byte after the algorithm asked: {latency:.4f} s (goal < 1 s: "
            f"{'met' if latency < 1 else 'missed'}); from job start {p['TimeToFirstByteSeconds']:.2f} s vs "
            f"File {f['TimeToFirstByteSeconds']:.2f} s",
            f"- {algorithm}: Pipe total / File total: **{ratio_total:.2f}** (goal <= 0.65: "
            f"{'met' if ratio_total <= 0.65 else 'missed'})",
            f"- {algorithm}: Pipe read throughput / server ceiling: **{ratio_ceiling:.2f}** (goal >= 0.9: "
            f"{'met' if ratio_ceiling >= 0.9 else 'missed'})",
            f"- {algorithm}: Pipe peak disk {p['PeakLocalDiskBytes'] / MB:.2f} MB vs File "
            f"{f['PeakLocalDiskBytes'] / MB:,.0f} MB",
        ]
    lines += ["", NOTES, "", f"The whole benchmark took {time.monotonic() - begun:,.0f} s; load average at the end "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work shares them, so times are noisy). "
              "`--size-gb` scales the data down for a quicker check."]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        _results.record_section("pipe_vs_file", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
