"""RecordIO-protobuf decode throughput against the memory floor and the SDK v2 path, in one run.

Data sets (written with our SDK-identical writer, unlabelled float32):
dense 50-dim, dense 784-dim, and sparse 100,000-dim with ~50 non-zeros per row.

For each, throughput (MB/s = 1e6 bytes/s, and records/s; median of several runs) of
``RecordDecoder`` (through ``decode_buffer`` or ``decode_stream``) reading

* **memory**: bytes in memory, decoded in place (``decode_buffer``), beside a plain numpy copy of the same
  bytes (the memory floor) and the SDK v2 path: ``read_recordio`` + ``Record.ParseFromString``
  + filling a numpy array (dense) or CSR arrays (sparse), on a slice of the same records;
* **file**: a file in the page cache read as File mode reads a channel (``iter_blocks``: the file
  mapped and decoded in place), beside a raw read of the same file into an aligned buffer (what
  ``cat`` does); also **file, read into a buffer**: the same file read by ``decode_stream`` (how
  File mode read files before 2026-12-03; FIFOs are still read so);
* **fifo**: a FIFO with a 1 MiB pipe buffer fed by another process, beside a raw read of the
  same FIFO fed the same way;
* **memory, numpy fallback** (sparse only): memory again, with the sparse fast path on its
  numpy implementation (what a machine without the compiled kernel gets), beside the SDK path.

Goals (issue 2, section 7): dense 50-dim from memory >= 2 GB/s and >= 75x the SDK path, from a
cached file >= 1.5 GB/s, from a FIFO >= 40% of the raw FIFO read; sparse >= 10x the SDK path.
Issue 18, section 3 (``--threads``, most threads listed): dense 50-dim from a cached file >= 0.5x
the raw file read, from a FIFO >= 0.8x the raw FIFO read. Each file/FIFO row also gives this
process's CPU seconds per GB, which other processes on a shared machine disturb far less than
the rates.
Exits non-zero when the protobuf backend is not upb, a fast path was not taken, or the sparse
fast path would run on its numpy implementation because the compiled kernel is not built (so a
silent fall-back cannot pass as a slow machine; ``--sparse-implementation numpy`` measures that
fallback on purpose). Results go to the ``io_decode``
section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from google.protobuf.internal import api_implementation

import _results
from pipealgos.io import ChannelSpec, iter_blocks, sparse_run
from pipealgos.io.channel import open_fifo
from pipealgos.io.parallel import decode_stream_parallel
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.stream import aligned_buffer, decode_buffer, decode_stream, read_at_least
from pipealgos.io.writer import write_dense, write_sparse

# Feeds a FIFO from another process, in 1 MiB writes, as the platform would.
FEEDER = """
import os, sys
src = os.open(sys.argv[1], os.O_RDONLY)
dst = os.open(sys.argv[2], os.O_WRONLY)
while True:
    chunk = os.read(src, 1 << 20)
    if not chunk:
        break
    view = memoryview(chunk)
    while view:
        view = view[os.write(dst, view):]
"""


@dataclass
class DataSet:
    name: str
    data: bytes
    records: int
    sdk_records: int  # the SDK path decodes this many leading records (it is slow)
    sdk_bytes: int
    sparse: bool


def dense_set(name: str, records: int, dim: int, sdk_records: int) -> DataSet:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    write_dense(out, rng.standard_normal((records, dim), dtype=np.float32))
    data = out.getvalue()
    return DataSet(name, data, records, sdk_records, len(data) * sdk_records // records, False)


def sparse_set(records: int, dim: int, nnz: int, sdk_records: int) -> DataSet:
    rng = np.random.default_rng(0)
    counts = rng.integers(nnz // 2, nnz * 3 // 2 + 1, records)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    # Sorted distinct columns per row (cumulative positive steps), without a per-row loop.
    steps = rng.integers(1, dim // (nnz * 3 // 2 + 1), indptr[-1])
    before_row = np.concatenate([[0], np.cumsum(steps)])[indptr[:-1]]
    indices = np.cumsum(steps) - np.repeat(before_row, counts)
    matrix = sp.csr_matrix((rng.standard_normal(indptr[-1], dtype=np.float32), indices, indptr), shape=(records, dim))
    out = io.BytesIO()
    write_sparse(out, matrix)
    data = out.getvalue()
    sdk_bytes = _frames_size(data, sdk_records)
    return DataSet(f"sparse {dim:,}-dim, ~{nnz} nnz", data, records, sdk_records, sdk_bytes, True)


def _frames_size(data: bytes, count: int) -> int:
    offset = 0
    for _ in range(count):
        length = int.from_bytes(data[offset + 4 : offset + 8], "little") & ((1 << 29) - 1)
        offset += 8 + (length + 3) // 4 * 4
    return offset


def interleaved(cases: dict[str, tuple[Callable, Callable | None]], runs: int
                ) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds and median CPU seconds of this process (all its threads; not a FIFO's
    feeder) per case: ``fn()``, or ``fn(stream)`` with a stream opened (untimed) per run. The
    cases take turns, run after run, so a machine whose speed drifts (a shared VM's does)
    shifts them alike and their ratios hold."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpu_times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (fn, open_stream) in cases.items():
            args = () if open_stream is None else (open_stream(),)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn(*args)
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - start_cpu)
    return ({name: statistics.median(v) for name, v in times.items()},
            {name: statistics.median(v) for name, v in cpu_times.items()})


# The sparse set from memory once more, on the numpy implementation of the sparse fast path.
NUMPY_FALLBACK = "memory, numpy fallback"
# The cached file once more, read into a buffer rather than mapped.
READ_FILE = "file, read into a buffer"


class FastPathNotTaken(RuntimeError):
    pass


def ours(ds: DataSet) -> Callable:
    """Decode a stream, or bytes in memory in place; check every record came out and the fast
    path took (nearly) all of them."""

    def run(source) -> None:
        decoder = RecordDecoder("bench")
        if isinstance(source, bytes):
            rows = sum(block.size for block in decode_buffer(source, decoder))
        else:
            try:
                rows = sum(block.size for block in decode_stream(source, decoder))
            finally:
                source.close()
        fast = decoder.fast_sparse_records if ds.sparse else decoder.fast_records
        if rows != ds.records:
            raise RuntimeError(f"{ds.name}: decoded {rows} records of {ds.records}")
        if fast < 0.99 * ds.records:
            raise FastPathNotTaken(f"{ds.name}: only {fast} of {rows} records took the fast path")

    return run


def sdk_path(ds: DataSet) -> Callable[[], None]:
    from sagemaker.amazon.common import read_recordio
    from sagemaker.amazon.record_pb2 import Record

    data = ds.data[: ds.sdk_bytes]

    def run() -> None:
        if ds.sparse:
            values, keys, indptr = [], [], [0]
            for payload in read_recordio(io.BytesIO(data)):
                record = Record()
                record.ParseFromString(payload)
                tensor = record.features["values"].float32_tensor
                values.extend(tensor.values)
                keys.extend(tensor.keys)
                indptr.append(len(keys))
            sp.csr_matrix((np.asarray(values, np.float32), np.asarray(keys, np.int64), np.asarray(indptr)))
        else:
            rows = []
            for payload in read_recordio(io.BytesIO(data)):
                record = Record()
                record.ParseFromString(payload)
                rows.append(np.asarray(record.features["values"].float32_tensor.values, dtype=np.float32))
            np.vstack(rows)

    return run


def raw_read() -> Callable:
    """Read a stream to its end into an aligned buffer, filling it each time, and nothing else."""
    buf = aligned_buffer(2 << 20)

    def run(stream) -> None:
        try:
            while read_at_least(stream, memoryview(buf), len(buf)) == len(buf):
                pass
        finally:
            stream.close()

    return run


class FifoSource:
    """A fresh FIFO per run, fed from ``path`` by a separate process.

    Calling it starts the feeder and returns the FIFO once its first byte arrived, so the
    feeder's start-up is not timed."""

    def __init__(self, folder: Path, path: Path) -> None:
        self.folder, self.path, self.count = folder, path, 0
        self.feeder: subprocess.Popen | None = None

    def __call__(self):
        fifo = self.folder / f"{self.path.stem}.fifo{self.count}"
        self.count += 1
        os.mkfifo(fifo)
        self.feeder = subprocess.Popen([sys.executable, "-c", FEEDER, str(self.path), str(fifo)])
        return _Closing(open_fifo(fifo, 30, "bench"), self)

    def reap(self) -> None:
        if self.feeder is not None and self.feeder.wait(60) != 0:
            raise RuntimeError("FIFO feeder failed")


class _Closing:
    """A stream that waits for its feeder process when closed."""

    def __init__(self, stream, source: FifoSource) -> None:
        self.stream, self.source = stream, source

    def readinto(self, view) -> int:
        return self.stream.readinto(view)

    def close(self) -> None:
        self.stream.close()
        self.source.reap()


def ours_parallel(ds: DataSet, threads: int) -> Callable:
    """Decode a stream on ``threads`` threads (pipealgos.io.parallel); check every record came out."""

    def run(source) -> None:
        try:
            rows = sum(block.size for block in decode_stream_parallel(source, "bench", None, threads))
        finally:
            source.close()
        if rows != ds.records:
            raise RuntimeError(f"{ds.name}: decoded {rows} records of {ds.records} on {threads} threads")

    return run


def channel_pass(ds: DataSet, folder: Path, threads: int) -> Callable[[], None]:
    """One File-mode pass (``iter_blocks``) over a channel holding the data set as one file, on
    ``threads`` decode threads; check every record came out."""
    channel = folder / "channels" / f"{ds.name.split()[0]}-{len(ds.data)}"
    if not channel.exists():
        channel.mkdir(parents=True)
        (channel / "part.pbr").write_bytes(ds.data)
        (channel / "part.pbr").read_bytes()  # in the page cache from here on
    spec = ChannelSpec(channel.name, channel.parent, decode_threads=threads)

    def run() -> None:
        rows = sum(block.size for block in iter_blocks(spec, 0))
        if rows != ds.records:
            raise RuntimeError(f"{ds.name}: decoded {rows} records of {ds.records} from a file on {threads} threads")

    return run


def threaded(source: str, threads: int) -> str:
    return source if threads == 1 else f"{source}, {threads} threads"


def measure(ds: DataSet, folder: Path, runs: int, thread_counts: list[int] = (1,)
            ) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per pass for every (source, reader) pair, and CPU seconds per pass of ours from
    a file and a FIFO by thread count (on a shared machine the CPU a reader spends is the
    figure other processes do not disturb much). Readers of one source take turns
    (:func:`interleaved`)."""
    path = folder / f"{ds.name.split()[0]}-{len(ds.data)}.pbr"
    path.write_bytes(ds.data)
    path.read_bytes()  # in the page cache from here on
    src = np.frombuffer(ds.data, dtype=np.uint8)
    dst = aligned_buffer(len(ds.data))
    fifo = FifoSource(folder, path)
    file = lambda: open(path, "rb", buffering=0)  # noqa: E731
    times, _ = interleaved({"memory": (ours(ds), lambda: ds.data), "numpy copy": (lambda: np.copyto(dst, src), None)},
                           runs)
    times.update(interleaved({"SDK v2": (sdk_path(ds), None)}, max(1, runs // 2))[0])
    from_file = {threaded("file", n): (channel_pass(ds, folder, n), None) for n in thread_counts}
    from_file |= {READ_FILE: (ours(ds), file), "raw file read": (raw_read(), file)}
    from_fifo = {"fifo": (ours(ds), fifo), "raw fifo read": (raw_read(), fifo)}
    from_fifo |= {threaded("fifo", n): (ours_parallel(ds, n), fifo) for n in thread_counts if n > 1}
    cpu: dict[str, float] = {}
    for cases in (from_file, from_fifo):
        case_times, case_cpu = interleaved(cases, runs)
        times |= case_times
        cpu |= {name: seconds for name, seconds in case_cpu.items() if not name.startswith("raw")}
    if ds.sparse and sparse_run.implementation == "c":  # what a machine without the kernel gets
        sparse_run.implementation = "numpy"
        try:
            times |= interleaved({NUMPY_FALLBACK: (ours(ds), lambda: ds.data)}, runs)[0]
        finally:
            sparse_run.implementation = "c"
    return times, cpu


def machine() -> str:
    import google.protobuf

    return _results.machine(f"protobuf {google.protobuf.__version__} ({api_implementation.Type()} backend), "
                            f"sparse fast path: {sparse_run.implementation} implementation")


def report(results: list[tuple[DataSet, dict[str, float], dict[str, float]]], options: str,
           thread_counts: list[int] = (1,)) -> tuple[str, bool]:
    lines = [
        "## RecordIO-protobuf decoding (`benchmarks/io_decode.py`)",
        "",
        f"`python benchmarks/io_decode.py{options}` — {machine()}; "
        f"load average {os.getloadavg()[0]:.1f} when it finished (the machine is shared: ratios "
        "measured in the same run are the figures to compare). MB = 10^6 bytes; median of several runs. "
        "SDK v2 = `read_recordio` + `Record.ParseFromString` + filling numpy/CSR arrays, on the "
        "leading records of the same data. CPU s/GB: this process's CPU time (all threads; not the FIFO's "
        "feeder) per GB decoded, median.",
        "",
        "| data | records | MB | source | decode threads | ours MB/s | ours records/s | ours CPU s/GB | baseline "
        "| baseline MB/s | ours / baseline |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    verdicts, ok = [], True
    for ds, t, cpu in results:
        mb = len(ds.data) / 1e6
        rate = {k: mb / v for k, v in t.items()}
        rate["SDK v2"] = ds.sdk_bytes / 1e6 / t["SDK v2"]
        pairs = [("memory", 1, ("numpy copy", "SDK v2"))]
        pairs += [("file", n, ("raw file read",)) for n in thread_counts]
        pairs.append((READ_FILE, 1, ("raw file read",)))
        pairs += [("fifo", n, ("raw fifo read",)) for n in thread_counts]
        pairs.append((NUMPY_FALLBACK, 1, ("SDK v2",)))
        for source, threads, baselines in pairs:
            key = threaded(source, threads)
            if key not in t:
                continue
            cpu_per_gb = f"{cpu[key] / mb * 1000:.2f}" if key in cpu else ""
            for baseline in baselines:
                lines.append(
                    f"| {ds.name} | {ds.records:,} | {mb:.0f} | {source} | {threads} | {rate[key]:,.0f} | "
                    f"{ds.records / t[key]:,.0f} | {cpu_per_gb} | {baseline} | {rate[baseline]:,.0f} | "
                    f"{rate[key] / rate[baseline]:.2f} |"
                )
        if ds.name.startswith("dense 50"):
            checks = [
                ("from memory", rate["memory"], 2000, "MB/s"),
                ("from memory / SDK v2", rate["memory"] / rate["SDK v2"], 75, "x"),
                ("from a cached file", rate["file"], 1500, "MB/s"),
                ("from a FIFO / raw FIFO read", rate["fifo"] / rate["raw fifo read"], 0.4, "x"),
            ]
            most = max(thread_counts)
            if most > 1:
                checks += [
                    (f"from a cached file on {most} decode threads / raw file read (`cat`)",
                     rate[threaded("file", most)] / rate["raw file read"], 0.5, "x"),
                    (f"from a FIFO on {most} decode threads / raw FIFO read",
                     rate[threaded("fifo", most)] / rate["raw fifo read"], 0.8, "x"),
                ]
        elif ds.sparse:
            checks = [("from memory / SDK v2", rate["memory"] / rate["SDK v2"], 10, "x")]
        else:
            checks = []
        for what, value, goal, unit in checks:
            met = value >= goal
            ok &= met
            verdicts.append(f"- {ds.name} {what}: **{value:,.2f} {unit}** (goal >= {goal:g} {unit}: "
                            f"{'met' if met else 'MISSED'})")
        most = max(thread_counts)
        if ds.name.startswith("dense 50") and most > 1:
            # The ceiling of the threads goal on this machine: one decoder's rate times the threads.
            verdicts.append(f"- {ds.name}: one decoder's cached-file rate x {most} (perfect scaling on {most} "
                            f"threads) / raw file read: {most * rate['file'] / rate['raw file read']:.2f} x")
    return "\n".join(lines + [""] + verdicts), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data sets and fewer runs (a smoke test)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--sparse-implementation", choices=["c", "numpy"], default="c",
                        help="which implementation of the sparse fast path to measure (default: the compiled "
                        "kernel; numpy: the fallback used where it is not built)")
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}",
                        help="comma list of decode thread counts for the file and FIFO sources (default 1 and "
                        "the core count; pipealgos.io.parallel above 1)")
    args = parser.parse_args(argv)
    thread_counts = sorted({int(t) for t in args.threads.split(",")} | {1})
    backend = api_implementation.Type()
    print(f"protobuf backend: {backend}")
    if backend != "upb":
        print("the protobuf backend must be upb (the pure-Python one is ~50x slower)", file=sys.stderr)
        return 1
    if args.sparse_implementation == "c" and sparse_run.implementation != "c":
        print("FAST PATH NOT TAKEN: the compiled sparse kernel (pipealgos.io._sparse_kernel) is not built; "
              "reinstall with a C compiler present, or pass --sparse-implementation numpy", file=sys.stderr)
        return 1
    sparse_run.implementation = args.sparse_implementation
    print(f"sparse fast path: {sparse_run.implementation} implementation")
    scale, runs = (10, 3) if args.quick else (1, 9)
    sets = [
        dense_set("dense 50-dim", 400_000 // scale, 50, 20_000 // scale),
        dense_set("dense 784-dim", 30_000 // scale, 784, 2_000 // scale),
        sparse_set(60_000 // scale, 100_000, 50, 6_000 // scale),
    ]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-io-") as tmp:
        for ds in sets:
            print(f"{ds.name}: {ds.records:,} records, {len(ds.data) / 1e6:.0f} MB ...", flush=True)
            try:
                results.append((ds, *measure(ds, Path(tmp), runs, thread_counts)))
            except FastPathNotTaken as exc:
                print(f"FAST PATH NOT TAKEN: {exc}", file=sys.stderr)
                return 1
    options = (" --quick" if args.quick else "") + f" --threads {','.join(map(str, thread_counts))}" + (
        f" --sparse-implementation {args.sparse_implementation}" if args.sparse_implementation != "c" else "")
    section, met = report(results, options, thread_counts)
    print(section)
    if not args.no_record:
        _results.record_section("io_decode", section)
    if not met:
        print("some goals were missed (see above)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
