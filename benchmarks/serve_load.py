"""Load on `serve` over loopback: what the HTTP stack costs and how fast batches go.

Trains a PCA model (feature_dim 50, 10 components), starts `serve` (gunicorn, one worker per
core) and drives it with a Python load generator: ``CLIENTS`` processes, each on one kept-alive
``http.client`` connection sending requests back to back. Scenarios take turns in ``ROUNDS`` rounds of
``ROUND_S`` each (after a warm-up), so background load on a shared machine hits them alike:

* ``GET /ping`` — the trivial endpoint on the same stack: the framework's ceiling;
* single-record JSON, 1,000-record JSON, 1,000-record RecordIO-protobuf (protobuf answer).

Prints requests/s, p50/p99 latency, records/s and the server's CPU time per request, and the ratios the issue sets goals for
(on 2 cores): single-record JSON >= 50 % of the trivial endpoint's rate; 1,000-record
RecordIO-protobuf >= 200,000 records/s. The client runs on the same cores as the server, so
absolute rates are lower than a remote client would see; the ratio shares that handicap.
Records the figures in the "serve" section of RESULTS.md.
"""

from __future__ import annotations

import http.client
import io
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import _results
from pipealgos.io import write_dense
from pipealgos.platform.config import MLRoot
from pipealgos.platform.train import run_training

FEATURE_DIM = 50
NUM_COMPONENTS = 10
CLIENTS = 4
ROUNDS = 3  # scenarios take turns, so a change in background load hits them all alike
WARMUP_S = 0.5
ROUND_S = 2.5
SINGLE_JSON_GOAL = 0.5
PROTOBUF_RECORDS_GOAL = 200_000


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    path: str
    body: bytes
    headers: dict
    records: int  # per request (0: no inference)


@dataclass
class Result:
    scenario: Scenario
    latencies_ms: list[float]  # requests inside the measured windows
    seconds: float  # total measured time
    server_cpu_s: float  # server CPU over all rounds, warm-ups included
    sent: int  # requests over all rounds, warm-ups included
    errors: int

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds

    @property
    def records_per_s(self) -> float:
        return self.rps * self.scenario.records

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_s / self.sent

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def _train_model(root: Path) -> None:
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (root / "model").mkdir()
    (config / "hyperparameters.json").write_text(json.dumps(
        {"feature_dim": str(FEATURE_DIM), "num_components": str(NUM_COMPONENTS), "mini_batch_size": "500"}))
    (config / "inputdataconfig.json").write_text(json.dumps({"train": {"TrainingInputMode": "File"}}))
    data = root / "input" / "data" / "train"
    data.mkdir(parents=True)
    rows = np.random.default_rng(0).normal(size=(5_000, FEATURE_DIM)).astype(np.float32)
    with open(data / "part-0.pbr", "wb") as out:
        write_dense(out, rows)
    if run_training(MLRoot(root), "pca") != 0:
        raise RuntimeError((root / "output" / "failure").read_text())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(root: Path, port: int, workers: int) -> subprocess.Popen:
    env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers)}
    log = root / "serve.log"
    with open(log, "wb") as handle:  # a file, not a pipe: nobody drains a pipe while the load runs
        process = subprocess.Popen([sys.executable, "-m", "pipealgos.cli", "serve", "--ml-root", str(root),
                                    "--host", "127.0.0.1"], env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited: {log.read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                conn.close()
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"serve did not become ready: {log.read_text()}")


def _client(args) -> tuple[list[float], int, int]:
    """One connection sending ``scenario`` back to back: latencies of requests that start
    and end inside the measured window, errors, and all requests sent (warm-up included)."""
    port, scenario, measure_from, measure_to = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies, errors, sent = [], 0, 0
    while True:
        started = time.perf_counter()
        if started >= measure_to:
            break
        conn.request(scenario.method, scenario.path, body=scenario.body or None, headers=scenario.headers)
        response = conn.getresponse()
        response.read()
        ended = time.perf_counter()
        sent += 1
        if response.status != 200:
            errors += 1
        if started >= measure_from and ended <= measure_to:
            latencies.append(ended - started)
    conn.close()
    return latencies, errors, sent


def _server_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the gunicorn master and its workers so far (Linux /proc)."""
    ticks = 0
    for one in _results.process_tree(pid):
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _run(pool, port: int, server_pid: int, scenario: Scenario, result: Result | None) -> Result:
    """One round of ``scenario``, added to ``result``."""
    start = time.perf_counter() + 0.2  # perf_counter is system-wide (CLOCK_MONOTONIC) on Linux
    window = (start + WARMUP_S, start + WARMUP_S + ROUND_S)
    cpu_before = _server_cpu_seconds(server_pid)
    outcomes = pool.map(_client, [(port, scenario, *window)] * CLIENTS)
    cpu = _server_cpu_seconds(server_pid) - cpu_before
    result = result or Result(scenario, [], 0, 0.0, 0, 0)
    for latencies, errors, sent in outcomes:
        result.latencies_ms.extend(1000 * x for x in latencies)
        result.errors += errors
        result.sent += sent
    result.seconds += ROUND_S
    result.server_cpu_s += cpu
    return result


def _scenarios() -> list[Scenario]:
    rng = np.random.default_rng(1)
    one = rng.normal(size=(1, FEATURE_DIM)).astype(np.float32)
    batch = rng.normal(size=(1_000, FEATURE_DIM)).astype(np.float32)
    protobuf = io.BytesIO()
    write_dense(protobuf, batch)

    def as_json(rows: np.ndarray) -> bytes:
        return json.dumps({"instances": [{"features": r} for r in rows.tolist()]}).encode()

    json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    pb = "application/x-recordio-protobuf"
    return [
        Scenario("trivial endpoint (GET /ping)", "GET", "/ping", b"", {}, 0),
        Scenario("single-record JSON", "POST", "/invocations", as_json(one), json_headers, 1),
        Scenario("1,000-record JSON", "POST", "/invocations", as_json(batch), json_headers, 1_000),
        Scenario("1,000-record RecordIO-protobuf", "POST", "/invocations", protobuf.getvalue(),
                 {"Content-Type": pb, "Accept": pb}, 1_000),
    ]


def _report(results: list[Result], workers: int) -> tuple[str, bool]:
    ping, single, batch_json, protobuf = results
    single_ratio = single.rps / ping.rps
    cores = os.cpu_count() or 1
    lines = [
        f"`python benchmarks/serve_load.py` — PCA (feature_dim {FEATURE_DIM}, {NUM_COMPONENTS} components), "
        f"`serve` with {workers} gthread workers on {cores} cores, {CLIENTS} kept-alive Python client "
        f"connections on the same machine; {ROUNDS} interleaved rounds of {ROUND_S:g} s per scenario "
        f"(after {WARMUP_S:g} s warm-up each). Server CPU is the gunicorn processes' user+system time; "
        f"\"records per server CPU-s\" does not depend on what else the machine runs.",
        "",
        "| scenario | requests/s | p50 ms | p99 ms | records/s | server CPU ms/request | records per server CPU-s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        records = f"{r.records_per_s:,.0f}" if r.scenario.records else "–"
        per_cpu = f"{r.scenario.records / r.cpu_ms_per_request * 1000:,.0f}" if r.scenario.records else "–"
        lines.append(f"| {r.scenario.name} | {r.rps:,.0f} | {r.percentile_ms(50):.2f} | {r.percentile_ms(99):.2f} | "
                     f"{records} | {r.cpu_ms_per_request:.3f} | {per_cpu} | {r.errors} |")
    single_ok = single_ratio >= SINGLE_JSON_GOAL
    protobuf_ok = protobuf.records_per_s >= PROTOBUF_RECORDS_GOAL
    capacity = cores * protobuf.scenario.records / protobuf.cpu_ms_per_request * 1000
    lines += [
        "",
        f"- single-record JSON / trivial endpoint, requests/s: **{single_ratio:.2f}** (goal >= {SINGLE_JSON_GOAL}: "
        f"{'met' if single_ok else 'NOT met'}); by server CPU per request: "
        f"{ping.cpu_ms_per_request / single.cpu_ms_per_request:.2f}",
        f"- 1,000-record RecordIO-protobuf: **{protobuf.records_per_s:,.0f} records/s** = "
        f"{protobuf.records_per_s / PROTOBUF_RECORDS_GOAL:.2f} x the goal of {PROTOBUF_RECORDS_GOAL:,} "
        f"({'met' if protobuf_ok else 'NOT met'}); server CPU allows {capacity:,.0f} records/s on {cores} cores",
        f"- 1,000-record RecordIO-protobuf / 1,000-record JSON: "
        f"{protobuf.records_per_s / batch_json.records_per_s:.1f} x the records/s",
    ]
    errors = sum(r.errors for r in results)
    return "\n".join(lines), errors == 0


def main() -> int:
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        root = Path(tmp)
        _train_model(root)
        port = _free_port()
        server = _start_server(root, port, workers)
        try:
            with multiprocessing.get_context("fork").Pool(CLIENTS) as pool:
                scenarios = _scenarios()
                results: list[Result | None] = [None] * len(scenarios)
                for round_number in range(ROUNDS):
                    for i, scenario in enumerate(scenarios):
                        results[i] = _run(pool, port, server.pid, scenario, results[i])
                    print(f"after round {round_number + 1}/{ROUNDS}: " + ", ".join(
                        f"{r.scenario.name} {r.rps:,.0f} req/s" for r in results), flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    text, clean = _report(results, workers)
    print("\n" + text)
    _results.record_section("serve_load", text, title="## serve (`benchmarks/serve_load.py`)")
    if not clean:
        print("serve_load: some requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
