"""Soak of `serve`: mixed good and bad requests from many connections on loopback for a while.

``make soak`` (10 minutes; ``python benchmarks/soak.py --minutes 1`` for a short run). Trains the
same PCA model as ``serve_load.py``, starts `serve` (one gthread worker per core,
``PIPEALGOS_REQUEST_READ_TIMEOUT=5`` so stalled clients are cut off quickly) and runs
``CLIENTS`` client processes. Each sends requests picked at random (seeded) from ``CASES``:
good ones (``/ping``, JSON, JSON Lines, CSV, RecordIO-protobuf, some on fresh connections)
whose answer must be 200 with exactly the bytes the first answer had, and bad ones (malformed
or too-wide bodies, values beyond float32, huge sparse shapes, 100,000-deep JSON, unsupported
types, oversized bodies, clients that stall mid-body or hang up mid-body) whose answer must be
their 4xx. The server's memory (RSS of the gunicorn master and workers) is sampled every few
seconds.

Passes (exit 0) when no good request failed, every bad one got its status, and the RSS at the
end is within ``RSS_GROWTH_LIMIT`` of the RSS after the first fifth of the run (the warm-up:
allocator pools, the workers' first large requests). Records the figures in the "soak"
section of RESULTS.md. Not part of ``make test`` or ``make bench``.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import multiprocessing
import os
import random
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import _results
import serve_load
from pipealgos.io import write_dense

CLIENTS = 8
READ_TIMEOUT_S = 5  # a 7 MB body on a loaded 2-core machine must still arrive in time
SAMPLE_EVERY_S = 5
RSS_GROWTH_LIMIT = 0.10  # of the post-warm-up RSS
FEATURE_DIM = serve_load.FEATURE_DIM
JSON, CSV, PB = "application/json", "text/csv", "application/x-recordio-protobuf"


@dataclass(frozen=True)
class Case:
    name: str
    status: int  # the answer it must get
    weight: int  # how often it is picked, relative to the others
    method: str = "POST"
    path: str = "/invocations"
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    fresh_connection: bool = False  # open a new connection for it (and close it after)
    stall: str = ""  # "" | "silent" (send half the body, wait for the answer) | "hang up" (send half, close)


def _cases() -> list[Case]:
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(1_000, FEATURE_DIM)).astype(np.float32)
    protobuf = io.BytesIO()
    write_dense(protobuf, rows)
    csv = "".join(",".join(map(repr, r)) + "\n" for r in rows[:100].astype(np.float64).tolist()).encode()
    instances = {"instances": [{"features": r} for r in rows[:10].tolist()]}
    json_body = json.dumps(instances).encode()
    jsonlines = "".join(json.dumps({"features": r}) + "\n" for r in rows[:10].tolist()).encode()
    sparse = json.dumps({"instances": [{"data": {"features": {"keys": [0], "shape": [2**70], "values": [1]}}}]}).encode()
    too_wide = csv.replace(b"\n", b",1\n", 1)
    beyond_float32 = json.dumps({"instances": [{"features": [1e40] * FEATURE_DIM}]}).encode()
    return [
        Case("ping", 200, 10, "GET", "/ping"),
        Case("ping, fresh connection", 200, 3, "GET", "/ping", fresh_connection=True),
        Case("10-record JSON", 200, 10, body=json_body, headers={"Content-Type": JSON}),
        Case("10-record JSON Lines -> JSON Lines", 200, 5, body=jsonlines,
             headers={"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"}),
        Case("100-record CSV -> CSV", 200, 5, body=csv, headers={"Content-Type": CSV, "Accept": CSV}),
        Case("1,000-record RecordIO-protobuf", 200, 5, body=protobuf.getvalue(), headers={"Content-Type": PB, "Accept": PB}),
        Case("1,000-record RecordIO, fresh connection", 200, 2, body=protobuf.getvalue(),
             headers={"Content-Type": PB, "Accept": PB}, fresh_connection=True),
        Case("malformed JSON", 400, 3, body=json_body[:-7], headers={"Content-Type": JSON}),
        Case("CSV one column too wide", 400, 3, body=too_wide, headers={"Content-Type": CSV}),
        Case("JSON beyond float32", 400, 2, body=beyond_float32, headers={"Content-Type": JSON}),
        Case("sparse shape 2^70", 400, 2, body=sparse, headers={"Content-Type": JSON}),
        Case("JSON nested 100,000 deep", 400, 1, body=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": JSON}),
        Case("RecordIO garbage", 400, 3, body=b"not a recordio frame....", headers={"Content-Type": PB}),
        Case("unsupported Content-Type", 415, 2, body=b"\x89PNG", headers={"Content-Type": "image/png"}),
        Case("unsupported Accept", 406, 2, body=csv, headers={"Content-Type": CSV, "Accept": "text/html"}),
        Case("7 MB body", 413, 1, body=b"1," * (7 << 19), headers={"Content-Type": CSV}),
        Case("stalls mid-body", 408, 1, body=csv, headers={"Content-Type": CSV}, fresh_connection=True, stall="silent"),
        Case("hangs up mid-body", 0, 1, body=csv, headers={"Content-Type": CSV}, fresh_connection=True, stall="hang up"),
    ]


@dataclass
class Tally:
    """One client's outcome: latencies of good requests, counts, and the first failures seen."""

    good_latencies_ms: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    good_failures: int = 0
    bad_surprises: int = 0
    examples: list[str] = field(default_factory=list)

    def failed(self, case: Case, what: str) -> None:
        if case.status == 200:
            self.good_failures += 1
        else:
            self.bad_surprises += 1
        if len(self.examples) < 5:
            self.examples.append(f"{case.name}: {what}")


def _stalled(port: int, case: Case) -> int:
    """Send the headers and half the body, then stall or hang up; the answer's status (0: none)."""
    head = f"{case.method} {case.path} HTTP/1.1\r\nHost: soak\r\nContent-Length: {len(case.body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in case.headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S * 10) as client:
        client.sendall(head.encode() + case.body[: len(case.body) // 2])
        if case.stall == "hang up":
            return 0
        answer = client.recv(64)
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else -1


def _client(args) -> Tally:
    """Requests picked at random until ``until`` (a time.time()), on one kept-alive connection
    (plus fresh ones where a case asks)."""
    port, seed, until = args
    cases = _cases()
    chooser = random.Random(seed)
    expected: dict[str, bytes] = {}
    tally = Tally()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    case = None
    while time.time() < until:
        previous, case = case, chooser.choices(cases, weights=[c.weight for c in cases])[0]
        tally.counts[case.name] = tally.counts.get(case.name, 0) + 1
        started = time.perf_counter()
        try:
            if case.stall:
                status, body = _stalled(port, case), b""
            else:
                target = http.client.HTTPConnection("127.0.0.1", port, timeout=60) if case.fresh_connection else conn
                target.request(case.method, case.path, body=case.body or None, headers=case.headers)
                response = target.getresponse()
                status, body = response.status, response.read()
                if case.fresh_connection or response.will_close:
                    target.close()
        except (OSError, http.client.HTTPException) as exc:
            tally.failed(case, f"{type(exc).__name__}: {exc} (after '{previous.name if previous else None}')")
            conn.close()  # reconnects on the next request
            continue
        latency_ms = 1000 * (time.perf_counter() - started)
        if status != case.status:
            tally.failed(case, f"status {status}, expected {case.status}: {body[:200]!r}")
        elif case.status == 200:
            if expected.setdefault(case.name, body) != body:
                tally.failed(case, "answer differs from the first answer to the same request")
            else:
                tally.good_latencies_ms.append(latency_ms)
    conn.close()
    return tally


def _rss_bytes(pid: int) -> int:
    """Resident memory of the gunicorn master and its workers (Linux /proc)."""
    total = 0
    for one in _results.process_tree(pid):
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def _soak(port: int, server_pid: int, seconds: float) -> tuple[list[Tally], list[tuple[float, int]]]:
    until = time.time() + seconds
    samples = []
    with multiprocessing.get_context("fork").Pool(CLIENTS) as pool:
        outcome = pool.map_async(_client, [(port, seed, until) for seed in range(CLIENTS)])
        started = time.monotonic()
        while not outcome.ready():
            samples.append((time.monotonic() - started, _rss_bytes(server_pid)))
            outcome.wait(SAMPLE_EVERY_S)
        return outcome.get(), samples


def _report(tallies: list[Tally], samples: list[tuple[float, int]], minutes: float, workers: int) -> tuple[str, bool]:
    latencies = np.concatenate([t.good_latencies_ms for t in tallies])
    counts: dict[str, int] = {}
    for tally in tallies:
        for name, count in tally.counts.items():
            counts[name] = counts.get(name, 0) + count
    good_failures = sum(t.good_failures for t in tallies)
    bad_surprises = sum(t.bad_surprises for t in tallies)
    after_warmup = [rss for at, rss in samples if at >= samples[-1][0] / 5] or [samples[-1][1]]
    baseline, final, peak = after_warmup[0], samples[-1][1], max(after_warmup)
    growth = (final - baseline) / baseline
    flat = growth <= RSS_GROWTH_LIMIT
    mib = 1 << 20
    lines = [
        f"`python benchmarks/soak.py --minutes {minutes:g}` — {serve_load.__name__}'s PCA model, `serve` with "
        f"{workers} gthread workers, {CLIENTS} client processes on loopback (kept-alive connections plus fresh "
        f"ones), PIPEALGOS_REQUEST_READ_TIMEOUT={READ_TIMEOUT_S}. {_results.machine()}.",
        "",
        f"- requests: {sum(counts.values()):,} ({sum(len(t.good_latencies_ms) for t in tallies):,} good answered "
        f"correctly); by case: " + ", ".join(f"{name} {count:,}" for name, count in sorted(counts.items())),
        f"- good requests failed: **{good_failures}**; bad requests without their 4xx: **{bad_surprises}**",
        f"- good-request latency: p50 {np.percentile(latencies, 50):.2f} ms, **p99 {np.percentile(latencies, 99):.2f} ms**, "
        f"max {latencies.max():.1f} ms",
        f"- server RSS (master + workers): {baseline / mib:.1f} MiB after the first fifth, {final / mib:.1f} MiB at "
        f"the end ({100 * growth:+.1f} %, limit +{100 * RSS_GROWTH_LIMIT:.0f} %), peak {peak / mib:.1f} MiB: "
        f"**{'flat' if flat else 'growing'}**",
    ]
    examples = [e for t in tallies for e in t.examples][:10]
    if examples:
        lines += ["- first failures: " + "; ".join(examples)]
    return "\n".join(lines), good_failures == 0 and bad_surprises == 0 and flat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to soak (default 10)")
    parser.add_argument("--no-record", action="store_true", help="print the figures without writing RESULTS.md")
    args = parser.parse_args(argv)
    workers = os.cpu_count() or 1
    os.environ["PIPEALGOS_REQUEST_READ_TIMEOUT"] = str(READ_TIMEOUT_S)  # inherited by serve
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        root = Path(tmp)
        serve_load._train_model(root)
        port = serve_load._free_port()
        server = serve_load._start_server(root, port, workers)
        try:
            tallies, samples = _soak(port, server.pid, 60 * args.minutes)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    text, passed = _report(tallies, samples, args.minutes, workers)
    print(text)
    if not args.no_record:
        _results.record_section("soak", text, title="## serve soak (`benchmarks/soak.py`, `make soak`)")
    print(f"soak: {'passed' if passed else 'FAILED (see above)'}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
