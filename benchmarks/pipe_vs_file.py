"""Pipe mode vs File mode, the AWS blog's seed experiment scaled down to this machine.

The blog trained PCA and k-means on 78.1 GiB of RecordIO-protobuf in 1,674 files from S3:
File mode waited 11.5 minutes for the download (~100 MB/s), Pipe mode started in 1.5 and cut
the total by up to 35%. Here: ``--size-gb`` (default 1.1) of dense records in ``--files``
(default 40) objects in a SeaweedFS server, the same job run by ``pipealgos run`` in File and
in Pipe mode, ``--pairs`` times in alternating order (medians reported).

The store sits behind a link of ``--link-mbps`` megabytes (10^6 bytes) per second (default
100, the blog's download rate; 0 = plain loopback): the benchmark re-runs itself in a private
network namespace and caps the S3 port's traffic with the kernel's HTB
(``benchmarks/_link.py``); where namespaces are unavailable it says why and relays through a
user-space token-bucket proxy instead, reporting the proxy's CPU. The link's own throughput
(parallel ranged GETs, data discarded) is measured in the same run.

Figures per job: time to first byte delivered to the algorithm (Pipe: first byte written to
the FIFO; File: the download finished, since the algorithm can start only then), the same
counted from the moment the algorithm opened its FIFO (Pipe only: the data latency, without
the ``train`` process start-up that both modes pay alike), total job time, read throughput
(bytes over the time data was flowing), and peak local disk used by the job's folders; and
the floor of each mode from the job's parts: download = bytes / cap, start-up = job start to
the FIFO opened (Pipe job), compute = File total - File data ready - start-up. File's floor
is download + start-up + compute; Pipe's is start-up + max(download, compute) when fetching
waits for `train`, and max(download, start-up + compute) when it starts with the job (the
feeder's start-up buffer, see ``pipealgos/platform/runner/feeder.py``).

The SeaweedFS launcher is the test suite's (``tests/runner/seaweed.py``), so the benchmark
and the tests start the server the same way. Results go to the ``pipe_vs_file`` section of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "runner"))

import _link  # noqa: E402
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

# name -> (algorithm, feature count, hyperparameters)
CONFIGS = {
    "kmeans": ("kmeans", FEATURES, {"feature_dim": str(FEATURES), "k": "100", "mini_batch_size": "5000",
                                    "epochs": "1"}),
    "pca": ("pca", FEATURES, {"feature_dim": str(FEATURES), "num_components": "10", "mini_batch_size": "5000"}),
    "pca500": ("pca", 500, {"feature_dim": "500", "num_components": "10", "mini_batch_size": "2000"}),
}


def prefix(features: int) -> str:
    return f"bench/f{features}/"


def upload(server: SeaweedServer, size_gb: float, files: int, features: int = FEATURES) -> tuple[int, int]:
    """Upload ``files`` objects of dense ``features``-wide records totalling about ``size_gb`` GB."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(features, features)).astype(np.float32)
    one = io.BytesIO()
    write_dense(one, np.zeros((1, features), np.float32))
    rows = max(1, int(size_gb * 1e9 / files / len(one.getvalue())))
    client = server.client()
    total = 0

    def put(i: int) -> int:
        x = np.random.default_rng(i).normal(size=(rows, features)).astype(np.float32) @ basis
        out = io.BytesIO()
        write_dense(out, x)
        client.put_object(Bucket=BUCKET, Key=f"{prefix(features)}part-{i:05d}.pbr", Body=out.getvalue())
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


def get_ceiling(server: SeaweedServer, endpoint: str, feed: FeedOptions,
                workers: int) -> tuple[float, dict[str, float], int]:
    """MB/s of parallel ranged GETs over every object, data discarded: what the server (behind
    the link, at ``endpoint``) can give; with the CPU it took and the bytes read."""
    store = S3Store(endpoint, max_connections=workers * 2)
    objects = store.list_prefix(f"s3://{BUCKET}/{prefix(FEATURES)}")
    ranges = [(o.uri, start, min(o.size, start + feed.chunk_size)) for o in objects
              for start in range(0, o.size, feed.chunk_size)]
    meter = CpuMeter(server.proc.pid)
    with ThreadPoolExecutor(workers) as pool:
        total = sum(len(data) for data in pool.map(lambda r: store.read_range(*r), ranges))
    cpu = meter.stop()
    return total / MB / cpu["wall"], cpu, total


def feeder_only(endpoint: str, feed: FeedOptions, folder: Path) -> float:
    """MB/s the Pipe feeder delivers into a FIFO whose reader discards the bytes (no algorithm)."""
    store = S3Store(endpoint)
    objects = store.list_prefix(f"s3://{BUCKET}/{prefix(FEATURES)}")
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


def run_mode(config: str, mode: str, work: Path, feed: FeedOptions, server: SeaweedServer) -> dict:
    algorithm, features, hyperparameters = CONFIGS[config]
    request = {
        "TrainingJobName": f"bench-{config}-{mode.lower()}",
        "AlgorithmSpecification": {"TrainingImage": f"{algorithm}:1", "TrainingInputMode": mode},
        "HyperParameters": hyperparameters,
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/{prefix(features)}",
            "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": str(work / "out")},
        "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge"},
    }
    meter = CpuMeter(server.proc.pid)
    result = run_job(parse_job(request), RunOptions(work_dir=work / "jobs", feed=feed, progress="plain",
                                                    progress_interval=30, overwrite=True))
    if result.status != "Completed":
        raise SystemExit(f"{config} {mode}: {result.status}: {result.failure}")
    return {**result.summary, "Cpu": meter.stop()}


def figures(s: dict) -> dict[str, float]:
    """The figures of one job's summary: data ready (s from job start), first byte after the
    FIFO opened, FIFO opened (s from job start, Pipe), last byte (s from job start), total,
    drain rate (MB/s), peak disk (MB)."""
    ch = s["Channels"]["train"]
    after_open = ch["FirstByteAfterOpenSeconds"]
    active = ch["Bytes"] / MB / ch["ThroughputMBps"] if ch.get("ThroughputMBps") else 0.0
    opened = None if after_open is None else s["TimeToFirstByteSeconds"] - after_open
    return {"ready": s["TimeToFirstByteSeconds"], "after_open": after_open, "opened": opened,
            "last_byte": (opened or 0.0) + active, "total": s["TotalSeconds"], "rate": ch["ThroughputMBps"],
            "disk": s["PeakLocalDiskBytes"] / MB}


def median_figures(runs: list[dict]) -> dict[str, float]:
    keys = runs[0].keys()
    return {k: (None if runs[0][k] is None else statistics.median(r[k] for r in runs)) for k in keys}


def row(config: str, mode: str, f: dict) -> str:
    def fmt(value, spec):
        return "–" if value is None else format(value, spec)

    return (f"| {config} | {mode} | {f['ready']:.2f} | {fmt(f['after_open'], '.3f')} | {fmt(f['opened'], '.2f')} | "
            f"{f['total']:.1f} | {f['rate']:,.1f} | {f['disk']:,.1f} |")


def floors(f: dict, p: dict, nbytes: int, link: float) -> dict[str, float]:
    """Each mode's floor from the job's parts (see the module docstring)."""
    download = nbytes / MB / link if link else f["ready"]
    startup = p["opened"]
    compute = max(0.0, f["total"] - f["ready"] - startup)
    return {"download": download, "startup": startup, "compute": compute,
            "file": download + startup + compute, "pipe_waiting": startup + max(download, compute),
            "pipe_early": max(download, startup + compute)}


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def config_lines(config: str, f: dict, p: dict, nbytes: int, link: float) -> list[str]:
    floor = floors(f, p, nbytes, link)
    ratio = p["total"] / f["total"]
    lines = [
        f"- **{config}**: download {floor['download']:.1f} s, start-up {floor['startup']:.1f} s, compute "
        f"{floor['compute']:.1f} s. Floors: File {floor['file']:.1f} s, Pipe fetching from the FIFO's open "
        f"{floor['pipe_waiting']:.1f} s, Pipe fetching from the job's start {floor['pipe_early']:.1f} s "
        f"(= {floor['pipe_early'] / f['total']:.2f} of File). Measured: File {f['total']:.1f} s, Pipe "
        f"{p['total']:.1f} s: **Pipe/File {ratio:.2f}**, Pipe / its floor **{p['total'] / floor['pipe_early']:.2f}**",
    ]
    if link:
        share = nbytes / MB / p["last_byte"] / link
        paced = floor["startup"] + floor["compute"]
        keeps_up = (verdict(share >= 0.95) if paced < floor["download"] else
                    f"not judged: start-up + compute {paced:.1f} s >= download {floor['download']:.1f} s, so the "
                    f"algorithm set the pace")
        lines.append(f"  - {config}: Pipe's last byte {p['last_byte']:.1f} s after the job started: the link "
                     f"carried **{share:.2f} of the cap** over that time (goal >= 0.95 while the algorithm keeps up: "
                     f"{keeps_up}); first byte {p['after_open']:.3f} s after the FIFO opened (goal "
                     f"< 0.1 s: {verdict(p['after_open'] < 0.1)}); peak disk Pipe {p['disk']:.1f} MB vs File "
                     f"{f['disk']:,.0f} MB")
    if config == "kmeans" and link:
        lines.append(f"  - kmeans goals: Pipe/File <= 0.60: {verdict(ratio <= 0.60)}; Pipe within 10% of "
                     f"max(download, start-up + compute): {verdict(p['total'] <= 1.1 * floor['pipe_early'])}")
    return lines


def choose_link(args, argv: list[str]) -> tuple[str, int | None]:
    """("loopback" | "tc" | "proxy", None), or ("reexec", exit status) after running this
    benchmark again inside a private network namespace."""
    if args.link_mbps == 0:
        return "loopback", None
    if _link.private_namespace_problem() is None:
        return "tc", None
    problem = "--no-namespace given" if args.no_namespace else _link.namespaces_problem()
    if problem is None:
        print(f"re-running in a private network namespace to shape the S3 port at {args.link_mbps:g} MB/s", flush=True)
        return "reexec", _link.run_in_private_namespace([sys.executable, str(Path(__file__).resolve()), *argv])
    print(f"no private network namespace ({problem}): shaping through a user-space token-bucket proxy", flush=True)
    return "proxy", None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.1, help="data size in GB per feature width (default 1.1)")
    parser.add_argument("--files", type=int, default=40, help="number of objects (default 40)")
    parser.add_argument("--workers", type=int, default=8, help="parallel GETs per channel (default 8)")
    parser.add_argument("--configs", default="kmeans,pca,pca500",
                        help=f"comma list of {', '.join(CONFIGS)} (default all)")
    parser.add_argument("--pairs", type=int, default=3, help="File/Pipe pairs per config, alternating order (3)")
    parser.add_argument("--link-mbps", type=float, default=100.0,
                        help="the link's cap in MB/s (10^6 bytes/s; default 100, the blog's File download rate); "
                             "0 = plain loopback")
    parser.add_argument("--no-namespace", action="store_true", help="use the token-bucket proxy even where a "
                        "private network namespace is possible")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    how, status = choose_link(args, argv)
    if how == "reexec":
        return status
    configs = [c for c in args.configs.split(",") if c in CONFIGS]
    link = args.link_mbps
    feed = FeedOptions(workers=args.workers)
    begun = time.monotonic()
    proxy = None

    with tempfile.TemporaryDirectory(prefix="pipe-vs-file-") as tmp:
        work = Path(tmp)
        server = SeaweedServer(work / "seaweed")
        endpoint = server.endpoint
        try:
            if how == "tc":
                _link.shape_source_port(server.s3_port, link)
            elif how == "proxy":
                proxy = _link.TokenBucketProxy(server.s3_port, link)
                endpoint = f"http://127.0.0.1:{proxy.port}"
            os.environ.update(server.env())  # the runner's boto3 finds the server and its keys here
            os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
            started = time.monotonic()
            for features in sorted({CONFIGS[c][1] for c in configs} | {FEATURES}):
                nbytes, nrows = upload(server, args.size_gb, args.files, features)
                print(f"uploaded {nbytes / MB:,.0f} MB ({nrows:,} {features}-feature records) in {args.files} "
                      f"objects in {time.monotonic() - started:.1f} s", flush=True)
            ceiling, ceiling_cpu, ceiling_bytes = get_ceiling(server, endpoint, feed, args.workers * 2)
            print(f"parallel-GET ceiling through the link: {ceiling:,.1f} MB/s", flush=True)
            fed = feeder_only(endpoint, feed, work / "fifo") if how == "loopback" else None
            runs: dict[tuple[str, str], list[dict]] = {}
            cpu: dict[tuple[str, str], dict] = {}
            for pair in range(args.pairs):
                for config in configs:
                    for mode in (("File", "Pipe") if pair % 2 == 0 else ("Pipe", "File")):
                        summary = run_mode(config, mode, work, feed, server)
                        runs.setdefault((config, mode), []).append(figures(summary))
                        cpu[config, mode] = summary["Cpu"]
                        print(row(config, mode, runs[config, mode][-1]), flush=True)
            load = os.getloadavg()
            sizes = {c: sum(o.size for o in S3Store(server.endpoint).list_prefix(
                f"s3://{BUCKET}/{prefix(CONFIGS[c][1])}")) for c in configs}
        finally:
            if proxy is not None:
                proxy.close()
            server.stop()

    medians = {key: median_figures(value) for key, value in runs.items()}
    where = {"loopback": "on plain loopback (no link cap)",
             "tc": f"behind a {link:g} MB/s link (HTB on the S3 port, in a private network namespace)",
             "proxy": f"behind a {link:g} MB/s link (user-space token-bucket proxy: {proxy.cpu_seconds if proxy else 0:.1f}"
                      " CPU-s in all)"}[how]
    lines = [
        f"`python benchmarks/pipe_vs_file.py --link-mbps {link:g} --size-gb {args.size_gb:g} --files {args.files} "
        f"--pairs {args.pairs}` — about {args.size_gb:g} GB of dense records per feature width in {args.files} "
        f"RecordIO-protobuf objects in SeaweedFS (`weed mini`) {where}; one host, {args.workers} parallel GETs "
        f"of 8 MiB, 64 MiB Pipe cap once the FIFO is open, 512 MiB start-up buffer; "
        f"{os.cpu_count()} cores shared by the server, the runner and `train`. {args.pairs} File/Pipe pairs "
        f"per config in alternating order; medians. Load average when the runs ended: "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) on {os.cpu_count()} cores: "
        "other work shared the machine.", "",
        f"Parallel ranged-GET throughput through the link, same run ({args.workers * 2} threads, data "
        f"discarded): **{ceiling:,.1f} MB/s**" + (f" = {ceiling / link:.3f} of the cap." if link else ".")
        + ("" if fed is None else f" The Pipe feeder alone into a discarding reader: {fed:,.1f} MB/s."), "",
        "| config | mode | data ready (s from job start) | first byte after FIFO open (s) | FIFO opened (s) "
        "| total (s) | read MB/s | peak disk (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *(row(c, m, f) for (c, m), f in medians.items()), "",
    ]
    for config in configs:
        lines += config_lines(config, medians[config, "File"], medians[config, "Pipe"], sizes[config], link)
    lines += ["", "CPU seconds per GB delivered (last run of each; S3 server process, this process's threads, "
              "the `train` processes):", "",
              cpu_note("ceiling (parallel GETs, data discarded)", ceiling_cpu, ceiling_bytes),
              *(cpu_note(f"{c} {m} job", value, sizes[c]) for (c, m), value in cpu.items()), ""]
    lines += ["" if link else NOTES, f"The whole benchmark took {time.monotonic() - begun:,.0f} s."]
    title = ("## Pipe mode vs File mode behind a bandwidth-limited link (`benchmarks/pipe_vs_file.py`)" if link
             else "## Pipe mode vs File mode on loopback (`benchmarks/pipe_vs_file.py --link-mbps 0`)")
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        _results.record_section("pipe_vs_file_link" if link else "pipe_vs_file", text, title=title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
