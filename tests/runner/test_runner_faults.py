"""Faults (issue 3 section 5): every one ends in a clear status and reason, never a hang or a
silently short epoch."""

import os
import signal
import threading
import time

import numpy as np

from jobkit import dense_bytes, pca_request, upload_parts
from pipealgos.platform.runner.job import parse_job
from pipealgos.platform.runner.runner import JobRun, RunOptions
from pipealgos.platform.runner.feeder import FeedOptions
from pipealgos.platform.runner.storage import RetryPolicy
from seaweed import BUCKET

RNG = np.random.default_rng(3)
FAST_RETRY = FeedOptions(workers=2, chunk_size=64 << 10, memory_cap=128 << 10,
                         retry=RetryPolicy(attempts=3, backoff=0.05))


def options(**extra) -> RunOptions:
    return RunOptions(progress="plain", failure_grace=60, **extra)


def use_server(monkeypatch, server):
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)


class Background:
    """A job running on a thread, so the test can break things while it runs."""

    def __init__(self, run: JobRun) -> None:
        self.run = run
        self._outcome: dict = {}
        self._thread = threading.Thread(target=lambda: self._outcome.setdefault("result", run.run()))
        self._thread.start()

    def wait_until(self, condition, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "the job never got there"
            time.sleep(0.005)

    def result(self, timeout: float):
        self._thread.join(timeout)
        return self._outcome["result"]


def test_server_killed_mid_stream_fails_the_job_naming_the_object(own_seaweed, monkeypatch, tmp_path):
    use_server(monkeypatch, own_seaweed)
    parts = [dense_bytes(RNG.normal(size=(4000, 6))) for _ in range(6)]  # ~0.6 MB each
    uri = upload_parts(own_seaweed, "killed", parts)
    # No start-up buffer: it would fetch the whole 3.6 MB before the server is killed.
    run = JobRun(parse_job(pca_request("killed", uri, str(tmp_path / "out"), mode="Pipe")),
                 options(feed=FeedOptions(workers=1, chunk_size=16 << 10, memory_cap=16 << 10,
                                          retry=RetryPolicy(attempts=3, backoff=0.05)), startup_buffer=0))
    job = Background(run)
    job.wait_until(lambda: any(f.stats.bytes for f in run.feeders))  # streaming: now kill the server
    own_seaweed.kill()
    result = job.result(60)
    assert result.status == "Failed" and result.failed_host == "algo-1"
    assert "Data download failed" in result.failure and f"s3://{BUCKET}/killed/part-" in result.failure
    assert "after 3 attempts" in result.failure
    assert result.summary["ExitCodes"]["algo-1"] == -signal.SIGKILL  # stopped before it could see EOF
    assert not (tmp_path / "out").exists()  # a failed job uploads nothing


def test_object_deleted_between_listing_and_reading(s3env, tmp_path):
    for mode in ("Pipe", "File"):
        prefix = f"deleted-{mode.lower()}"
        uri = upload_parts(s3env, prefix, [dense_bytes(RNG.normal(size=(50, 6))) for _ in range(3)])
        run = JobRun(parse_job(pca_request(prefix, uri, str(tmp_path / "out"), mode=mode)), options(feed=FAST_RETRY))
        run.list_inputs()
        s3env.client().delete_object(Bucket=BUCKET, Key=f"{prefix}/part-001.pbr")
        result = run.run()
        assert result.status == "Failed", result.summary
        assert f"s3://{BUCKET}/{prefix}/part-001.pbr" in result.failure and "NoSuchKey" in result.failure
        assert "deleted after it was listed?" in result.failure


def test_empty_prefix_fails_before_any_host_starts(s3env, tmp_path):
    result = JobRun(parse_job(pca_request("empty", f"s3://{BUCKET}/nothing/here/", str(tmp_path)))).run()
    assert result.status == "Failed" and result.summary["ExitCodes"] == {}
    assert "channel 'train': no objects found under S3Prefix s3://pipealgos-test/nothing/here/" in result.failure


def test_algorithm_failing_mid_epoch(s3env, tmp_path):
    good = dense_bytes(RNG.normal(size=(300, 6)))
    uri = upload_parts(s3env, "corrupt", [good, good, b"\x01\x02\x03\x04" * 1000, good])
    run = JobRun(parse_job(pca_request("corrupt", uri, str(tmp_path / "out"), mode="Pipe")), options())
    result = run.run()
    assert result.status == "Failed" and result.failed_host == "algo-1"
    assert result.failure.startswith("ClientError:") and "not a RecordIO frame" in result.failure
    assert f"train_0 (s3://{BUCKET}/corrupt/part-002.pbr, byte offset 0 of that object)" in result.failure
    assert result.summary["ExitCodes"] == {"algo-1": 1}
    assert all(not f.is_alive() and f.error is None for f in run.feeders)  # the feeder stopped cleanly


def test_a_host_killed_in_a_three_host_job(s3env, tmp_path):
    uri = upload_parts(s3env, "three", [dense_bytes(RNG.normal(size=(100, 6))) for _ in range(6)])
    request = pca_request("three", uri, str(tmp_path / "out"), mode="Pipe", hosts=3, distribution="ShardedByS3Key")
    request["Environment"] = {"PIPEALGOS_COLLECTIVE_TIMEOUT": "20"}
    run = JobRun(parse_job(request), options())
    job = Background(run)
    job.wait_until(lambda: "algo-2" in run.hosts)
    run.hosts["algo-2"].signal(signal.SIGKILL)
    killed_at = time.monotonic()
    result = job.result(120)
    assert time.monotonic() - killed_at < 60
    assert result.status == "Failed" and result.failed_host == "algo-2"
    assert "killed by signal 9" in result.failure
    codes = result.summary["ExitCodes"]
    assert codes["algo-2"] == -signal.SIGKILL and codes["algo-1"] not in (0, None) and codes["algo-3"] not in (0, None)
    for host in ("algo-1", "algo-3"):  # each gave up on its own, with its own reason
        assert run.hosts[host].exited_at - killed_at < 60


def test_max_runtime_exceeded_stops_the_job(own_seaweed, monkeypatch, tmp_path):
    use_server(monkeypatch, own_seaweed)
    uri = upload_parts(own_seaweed, "slow", [dense_bytes(RNG.normal(size=(100, 6)))])
    request = pca_request("slow", uri, str(tmp_path / "out"), mode="Pipe", max_runtime=8)
    run = JobRun(parse_job(request), options(stop_grace=5, s3_timeout=3))
    run.list_inputs()
    own_seaweed.pause()  # S3 hangs: the algorithm waits on its FIFO until the runtime runs out
    try:
        started = time.monotonic()
        result = run.run()
        took = time.monotonic() - started
    finally:
        own_seaweed.resume()
    assert result.status == "Stopped" and result.secondary == "MaxRuntimeExceeded" and result.exit_status == 3
    assert took < 8 + 5 + 15
    assert result.summary["ExitCodes"]["algo-1"] in (143, -signal.SIGTERM, -signal.SIGKILL)
    assert (tmp_path / "out" / "slow" / "output" / "model.tar.gz").exists()  # artifacts present are uploaded


def test_a_host_ignoring_sigterm_is_killed_after_the_grace(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "part-0.pbr").write_bytes(dense_bytes(RNG.normal(size=(50, 6))))
    request = pca_request("frozen", str(data), str(tmp_path / "out"), mode="Pipe", max_runtime=3)
    run = JobRun(parse_job(request), options(stop_grace=2))
    started = time.monotonic()
    job = Background(run)
    job.wait_until(lambda: "algo-1" in run.hosts, timeout=30)
    os.kill(run.hosts["algo-1"].proc.pid, signal.SIGSTOP)  # a stopped process leaves SIGTERM pending
    result = job.result(30)
    assert result.status == "Stopped" and result.summary["ExitCodes"] == {"algo-1": -signal.SIGKILL}
    assert run.hosts["algo-1"].exited_at - started < 3 + 2 + 5


def test_a_stopped_host_is_reported_not_the_peer_that_timed_out(s3env, tmp_path):
    uri = upload_parts(s3env, "frozen-peer", [dense_bytes(RNG.normal(size=(100, 6))) for _ in range(4)])
    request = pca_request("frozen-peer", uri, str(tmp_path / "out"), mode="Pipe", hosts=2,
                          distribution="ShardedByS3Key")
    request["Environment"] = {"PIPEALGOS_COLLECTIVE_TIMEOUT": "5"}
    run = JobRun(parse_job(request), options())
    job = Background(run)
    job.wait_until(lambda: "algo-2" in run.hosts)
    os.kill(run.hosts["algo-2"].proc.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    result = job.result(120)
    assert result.status == "Failed" and result.failed_host == "algo-2", result.failure
    assert "host algo-2 stopped answering" in result.failure and "algo-1 reported:" in result.failure
    assert result.summary["ExitCodes"]["algo-2"] == -signal.SIGKILL
    assert time.monotonic() - stopped_at < 5 + 30  # the collective timeout plus startup, not the failure grace


def test_a_stalled_server_is_reported_as_a_stall_within_the_set_limits(own_seaweed, monkeypatch, tmp_path):
    use_server(monkeypatch, own_seaweed)
    uri = upload_parts(own_seaweed, "stalled", [dense_bytes(RNG.normal(size=(100, 6)))])
    run = JobRun(parse_job(pca_request("stalled", uri, str(tmp_path / "out"))),
                 options(s3_timeout=1, feed=FeedOptions(retry=RetryPolicy(attempts=2, backoff=0.05))))
    run.list_inputs()
    own_seaweed.pause()  # the server takes connections and never answers
    try:
        result = run.run()
    finally:
        own_seaweed.resume()
    assert result.status == "Failed" and result.summary["ExitCodes"] == {}  # File mode: before any host
    assert "failed after 2 attempts (--s3-attempts)" in result.failure
    assert "stalled: no answer within 1 s (--s3-timeout)" in result.failure
