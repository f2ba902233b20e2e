"""Runs one training job locally the way SageMaker would: list, lay out, feed, train, pack.

1. List each channel's objects (``S3Prefix`` or ``ManifestFile``); an empty or unreadable
   input fails the job before any host starts.
2. Lay out ``<work>/<job>/<host>/`` as each host's ML root; pre-fill checkpoints.
3. File / FastFile channels: download each host's share into ``input/data/<channel>/``.
   Pipe channels: start one :class:`PipeFeeder` per (host, channel); epoch 0 starts fetching
   now, before any host starts, into a buffer of ``RunOptions.startup_buffer`` bytes for the
   whole job (512 MiB; shared evenly by the feeders, each getting at least the feed's
   ``memory_cap``), so the download overlaps the hosts' start-up.
4. Start ``train`` on every host, watch them: the first non-zero exit (or feeder failure) is
   the job's failure and names its host. The others are expected to fail on their own within
   the collective timeout; any still running ``failure_grace`` seconds later are killed.
   ``MaxRuntimeInSeconds`` sends SIGTERM to every host, then SIGKILL ``stop_grace`` seconds
   later (120 s, as ``docker stop -t120``) — status ``Stopped`` / ``MaxRuntimeExceeded``.
   Ctrl-C or SIGTERM to ``pipealgos run`` (:func:`stop_on_signals`) is StopTrainingJob: the
   same, with ``interrupt_grace`` (10 s) — status ``Stopped`` / ``Stopped``, exit status 3.
5. Completed or Stopped: pack every host's ``model/`` into ``model.tar.gz`` and
   ``output/data/`` into ``output.tar.gz`` at ``S3OutputPath/<job>/output/``; upload
   checkpoints. A Failed job uploads nothing, as on SageMaker (:mod:`.output` also refuses a
   name whose artifacts exist, and checks the output location before anything starts).

The work folder (a ``pipealgos-run-*`` temporary folder unless ``work_dir`` is given) is
removed however the run ends, unless ``keep_work_dir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..config import MLRoot
from . import plan
from .download import DownloadCounter, download_objects
from .feeder import FeedOptions, PipeFeeder
from .hosts import HostProcess, free_port, host_environment
from .job import ChannelInput, Job
from .layout import checkpoint_local_path, lay_out_host
from .output import OutputError, OutputLocation
from .progress import ChannelProgress, Display, summary
from .storage import StorageError, StoredObject, Stores, join_uri
from .streammap import StreamMap, name_objects

EXIT_COMPLETED, EXIT_FAILED, EXIT_STOPPED = 0, 1, 3
MAX_FAILURE_REASON = 1024  # DescribeTrainingJob's FailureReason
# 512 MiB is ~5 s of a 100 MB/s link: the start-up of `train` (Python, torch) measured here is ~4 s.
STARTUP_BUFFER = 512 << 20


class StopRequested(BaseException):
    """A stop signal arrived before any host started: abandon the preparation (a BaseException,
    like KeyboardInterrupt, so that no ``except Exception`` on the way swallows it)."""


@dataclass
class RunOptions:
    """How to run (not what: that is the :class:`Job`)."""

    work_dir: Path | None = None  # default: a temporary folder, removed afterwards
    keep_work_dir: bool = False
    endpoint_url: str | None = None
    s3_timeout: float = 60.0
    feed: FeedOptions = field(default_factory=FeedOptions)
    # Pipe mode: bytes all feeders together may fetch before their hosts open the FIFOs.
    startup_buffer: int = STARTUP_BUFFER
    stop_grace: float = 120.0  # MaxRuntimeInSeconds: SIGTERM, SIGKILL this much later (docker stop -t120)
    interrupt_grace: float = 10.0  # Ctrl-C / SIGTERM to the runner: the same, within docker stop's default 10 s
    failure_grace: float = 90.0
    overwrite: bool = False  # replace the artifacts of an earlier job of the same name
    progress: str = "auto"  # auto | tty | plain
    progress_stream: TextIO | None = None
    progress_interval: float = 10.0
    poll_interval: float = 0.1


@dataclass
class JobResult:
    status: str
    secondary: str
    failure: str | None
    failed_host: str | None
    summary: dict

    @property
    def exit_status(self) -> int:
        return {"Completed": EXIT_COMPLETED, "Stopped": EXIT_STOPPED}.get(self.status, EXIT_FAILED)


class DiskSampler(threading.Thread):
    """Peak bytes of regular files under ``root`` (FIFOs take no space), sampled every ``interval`` s."""

    def __init__(self, root: Path, interval: float = 0.25) -> None:
        super().__init__(daemon=True, name="disk-sampler")
        self.root = root
        self.interval = interval
        self.peak = 0
        self._stop_event = threading.Event()

    def sample(self) -> int:
        total = 0
        for dirpath, _, filenames in os.walk(self.root):
            for name in filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                if (st.st_mode & 0o170000) == 0o100000:
                    total += st.st_size
        self.peak = max(self.peak, total)
        return total

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.sample()
        return self.peak


class JobRun:
    """One run of ``job``. :meth:`list_inputs` may be called first (tests change the store
    between listing and reading); :meth:`run` does everything else and returns the result."""

    def __init__(self, job: Job, options: RunOptions | None = None) -> None:
        self.job = job
        self.options = options or RunOptions()
        self.stores = Stores(self.options.endpoint_url, self.options.s3_timeout)
        self.objects: dict[str, list[StoredObject]] | None = None
        self.display = Display(self.options.progress_stream, self.options.progress, self.options.progress_interval)
        self.hosts: dict[str, HostProcess] = {}
        self.feeders: list[PipeFeeder] = []
        self.downloads: dict[str, tuple[DownloadCounter, float, float]] = {}
        self.failure: str | None = None
        self.failed_host: str | None = None
        self._failed_at: float | None = None
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self.output = OutputLocation(job, self.stores)
        self._stop_reason: str | None = None
        self._stop_now = False
        self._preparing = False  # a stop request abandons the preparation only while this is True

    # -- steps ---------------------------------------------------------------------------
    def list_inputs(self) -> dict[str, list[StoredObject]]:
        if self.objects is None:
            self.objects = {ch.name: plan.list_objects(self.stores.for_uri(ch.uri), ch.uri, ch.data_type, ch.name,
                                                       skip_hidden=ch.is_pipe)
                            for ch in self.job.channels}
        return self.objects

    def _fail(self, host: str | None, reason: str) -> bool:
        """Record the job's failure if it is the first; True if it was."""
        with self._lock:
            if self.failure is not None:
                return False
            self.failure, self.failed_host, self._failed_at = reason, host, time.monotonic()
        self.display.note(f"job failed{f' on {host}' if host else ''}: {reason}")
        return True

    def _feeder_failed(self, host: str, message: str) -> None:
        self._fail(host, f"ClientError: Data download failed: {message}")
        with self._lock:
            proc = self.hosts.get(host)
        if proc is not None:
            proc.kill_and_wait()

    def _download(self, ch: ChannelInput, roots: dict[str, MLRoot]) -> None:
        counter, started = DownloadCounter(), time.monotonic()
        store = self.stores.for_uri(ch.uri)
        hosts = self.job.hosts
        for index, host in enumerate(hosts):
            share = plan.host_objects(self.objects[ch.name], index, len(hosts), ch.sharded)
            try:
                download_objects(store, share, roots[host].data_dir / ch.name, self.options.feed, counter)
            except StorageError as exc:
                raise StorageError(f"File-mode download of channel '{ch.name}' for {host} failed: {exc}") from None
        self.downloads[ch.name] = (counter, started, time.monotonic())

    def _feed_options(self) -> FeedOptions:
        """The feed options with this job's share of the start-up buffer for one feeder."""
        feeders = len(self.job.hosts) * sum(1 for ch in self.job.channels if ch.is_pipe)
        share = self.options.startup_buffer // max(1, feeders)
        return dataclasses.replace(self.options.feed, startup_buffer=share)

    def _start_feeders(self, ch: ChannelInput, roots: dict[str, MLRoot]) -> None:
        hosts = self.job.hosts
        objects = self.objects[ch.name]
        options = self._feed_options()
        for index, host in enumerate(hosts):
            def for_epoch(epoch: int, index=index) -> list[StoredObject]:
                return plan.host_objects(objects, index, len(hosts), ch.sharded, ch.shuffle_seed, epoch)

            feeder = PipeFeeder(host, ch.name, roots[host].data_dir, self.stores.for_uri(ch.uri), for_epoch,
                                ch.record_wrapper == "RecordIO", options,
                                lambda message, host=host: self._feeder_failed(host, message))
            feeder.start()
            self.feeders.append(feeder)

    def _prefill_checkpoints(self, roots: dict[str, MLRoot]) -> None:
        if self.job.checkpoint_uri is None:
            return
        store = self.stores.for_uri(self.job.checkpoint_uri)
        existing = store.list_prefix(self.job.checkpoint_uri.rstrip("/") + "/")
        for ml in roots.values():
            download_objects(store, existing, checkpoint_local_path(self.job, ml), self.options.feed, DownloadCounter())

    # -- stopping ---------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """StopTrainingJob, as the signal handler of ``pipealgos run`` calls it (main thread).

        Hosts that run get SIGTERM, then SIGKILL ``interrupt_grace`` seconds later; a second
        request kills them at once. Before any host started, the preparation is abandoned
        (:class:`StopRequested` is raised here, in the main thread, which is running it)."""
        # Nothing here may take a lock: the main thread may hold it where the signal came in.
        if self._stop_reason is not None:
            self._stop_now = True
            return
        self._stop_reason = reason
        if self._preparing:
            raise StopRequested(reason)

    # -- the job ------------------------------------------------------------------------
    def run(self) -> JobResult:
        work = Path(self.options.work_dir or tempfile.mkdtemp(prefix="pipealgos-run-"))
        job_dir = work / self.job.name
        try:
            return self._run_in(job_dir)
        finally:
            if not self.options.keep_work_dir:
                shutil.rmtree(job_dir, ignore_errors=True)
                if self.options.work_dir is None:
                    shutil.rmtree(work, ignore_errors=True)

    def _run_in(self, job_dir: Path) -> JobResult:
        if job_dir.exists():
            shutil.rmtree(job_dir)
        job_dir.mkdir(parents=True)
        disk = DiskSampler(job_dir)
        disk.start()
        roots: dict[str, MLRoot] = {}
        stop = None
        try:
            try:
                roots = self._prepare(job_dir, disk)
                if self.failure is None:
                    stop = self._run_hosts(roots, job_dir)
            except StopRequested as exc:
                self.display.note(f"{exc}: stopping the job before any host started")
                stop = "Stopped"
        finally:
            for feeder in self.feeders:
                feeder.stop()
            for feeder in self.feeders:
                feeder.join(10)
            peak = disk.stop()
            self.display.update(self._channel_progress(), force=True)
            self.display.close()
        return self._result(stop, roots, peak)

    def _prepare(self, job_dir: Path, disk: DiskSampler) -> dict[str, MLRoot]:
        """Everything before the hosts start; a problem here is the job's failure (ClientError)."""
        self._preparing = True
        try:
            self.output.prepare(self.options.overwrite)
            self.list_inputs()
            roots = {host: lay_out_host(self.job, host, job_dir / host) for host in self.job.hosts}
            self._prefill_checkpoints(roots)
            for ch in self.job.channels:
                if not ch.is_pipe:
                    self._download(ch, roots)
            disk.sample()
            for ch in self.job.channels:
                if ch.is_pipe:
                    self._start_feeders(ch, roots)
            return roots
        except (plan.PlanError, StorageError, OutputError) as exc:
            self._fail(None, f"ClientError: {exc}")
            return {}
        finally:
            self._preparing = False

    def _run_hosts(self, roots: dict[str, MLRoot], job_dir: Path) -> str | None:
        """Start every host and wait for all of them. The secondary status when the job was
        stopped (``MaxRuntimeExceeded`` or ``Stopped``), else None."""
        if self._stop_reason is not None:
            return "Stopped"  # stopped between the preparation and here
        env = host_environment(self.job, free_port())
        with self._lock:
            if self.failure is None:
                for host, ml in roots.items():
                    self.hosts[host] = HostProcess(host, ml, self.job.algorithm, env, job_dir / f"{host}.log",
                                                   self.display.host_line)
        deadline = None if self.job.max_runtime is None else self._started + self.job.max_runtime
        stop, kill_at = None, None
        while any(proc.poll() is None for proc in self.hosts.values()):
            time.sleep(self.options.poll_interval)
            now = time.monotonic()
            self.display.update(self._channel_progress())
            for host, proc in self.hosts.items():
                code = proc.poll()
                if code not in (None, 0) and stop is None and self.failure is None:
                    self._fail(*self._blame(host, proc))
            if stop is None and self._stop_reason is not None:
                stop, kill_at = "Stopped", now + self.options.interrupt_grace
                self.display.note(f"{self._stop_reason}: stopping the job (SIGTERM to every host, SIGKILL after "
                                  f"{self.options.interrupt_grace:g} s; again to kill at once)")
                self._terminate_hosts()
            if stop is None and deadline is not None and now >= deadline:
                stop, kill_at = "MaxRuntimeExceeded", now + self.options.stop_grace
                self.display.note(f"MaxRuntimeInSeconds ({self.job.max_runtime}) reached: SIGTERM to every host, "
                                  f"SIGKILL after {self.options.stop_grace:g} s")
                self._terminate_hosts()
            if self._stop_now:
                kill_at = now
            if self._failed_at is not None and kill_at is None:
                kill_at = self._failed_at + self.options.failure_grace
            if kill_at is not None and now >= kill_at:
                for host, proc in self.hosts.items():
                    if proc.poll() is None:
                        self.display.note(f"{host} still running: killing it")
                        proc.kill_and_wait()
        for proc in self.hosts.values():
            proc.wait_log()
        return stop

    def _terminate_hosts(self) -> None:
        for proc in self.hosts.values():
            proc.signal(signal.SIGTERM)

    def _blame(self, host: str, proc: HostProcess) -> tuple[str, str]:
        """(failed host, reason) when ``host`` is the first to exit non-zero.

        A peer whose process is stopped (SIGSTOP) is the one that failed: ``host`` only gave up
        waiting for it on the collective timeout. The stopped peer is killed at once, since it
        would never fail by itself and waiting ``failure_grace`` for it would only delay the end."""
        reason = self._host_failure(proc)
        frozen = [peer for name, peer in self.hosts.items() if name != host and peer.is_stopped()]
        if not frozen:
            return host, reason
        for peer in frozen:
            peer.kill_and_wait()
        names = ", ".join(peer.host for peer in frozen)
        return frozen[0].host, (f"AlgorithmError: host {names} stopped answering (its process was stopped: SIGSTOP "
                                f"or a debugger), so {host} gave up waiting for it. {host} reported: {reason}")

    def _host_failure(self, proc: HostProcess) -> str:
        text = proc.failure_text()
        if text:
            return name_objects(text, lambda channel, epoch: self._stream_map(proc.host, channel, epoch))
        if proc.exit_code is not None and proc.exit_code < 0:
            return f"AlgorithmError: host {proc.host} was killed by signal {-proc.exit_code}"
        return f"AlgorithmError: , exit code: {proc.exit_code}"

    def _stream_map(self, host: str, channel: str, epoch: int) -> StreamMap | None:
        """The map of what ``<channel>_<epoch>`` carried to ``host``; None for a Gzip channel,
        whose inflated offsets the map cannot place (see :mod:`.streammap`)."""
        if any(ch.name == channel and ch.compression == "Gzip" for ch in self.job.channels):
            return None
        feeder = next((f for f in self.feeders if f.stats.host == host and f.channel == channel), None)
        return feeder.stream_map(epoch) if feeder is not None else None

    # -- the outcome ----------------------------------------------------------------------
    def _channel_progress(self) -> list[ChannelProgress]:
        result = []
        for ch in self.job.channels:
            objects = len(self.objects[ch.name]) if self.objects else 0
            planned = objects * len(self.job.hosts) if not ch.sharded else objects
            progress = ChannelProgress(ch.name, ch.input_mode, planned_objects=planned)
            if ch.is_pipe:
                stats = [f.stats for f in self.feeders if f.channel == ch.name]
                progress.bytes = sum(s.bytes for s in stats)
                progress.objects = sum(s.objects for s in stats)
                firsts = [s.first_byte_at for s in stats if s.first_byte_at is not None]
                opens = [s.reader_opened_at for s in stats if s.reader_opened_at is not None]
                lasts = [s.last_byte_at for s in stats if s.last_byte_at is not None]
                if firsts:
                    progress.first_byte_s = min(firsts) - self._started
                    progress.first_byte_after_open_s = max(0.0, min(firsts) - min(opens))
                    progress.active_s = max(lasts) - min(opens)
            elif ch.name in self.downloads:
                counter, start, end = self.downloads[ch.name]
                progress.bytes, progress.objects = counter.bytes, counter.objects
                progress.first_byte_s = end - self._started
                progress.active_s = end - start
            result.append(progress)
        return result

    def _result(self, stop: str | None, roots: dict[str, MLRoot], peak_disk: int) -> JobResult:
        if stop is not None:
            status, secondary, failure = "Stopped", stop, None
        elif self.failure is not None:  # in full in the log, capped in the summary as FailureReason is
            status, secondary, failure = "Failed", "Failed", self.failure[:MAX_FAILURE_REASON]
        else:
            status, secondary, failure = "Completed", "Completed", None
        artifacts: dict = {}
        if status != "Failed" and self.hosts:  # a job stopped before any host ran has no artifacts
            try:
                artifacts = self._upload_artifacts(roots)
            except StorageError as exc:
                status, secondary, failure = "Failed", "Failed", f"ClientError: uploading the artifacts failed: {exc}"
        exit_codes = {host: proc.exit_code for host, proc in self.hosts.items()}
        failed_host = self.failed_host if failure else None
        body = summary(self.job.name, status, secondary, failure, failed_host, exit_codes,
                       self._channel_progress(), time.monotonic() - self._started, peak_disk, artifacts)
        return JobResult(status, secondary, failure, failed_host, body)

    def _upload_artifacts(self, roots: dict[str, MLRoot]) -> dict:
        artifacts = self.output.upload([ml.model_dir for ml in roots.values()],
                                       [ml.output_data_dir for ml in roots.values()])
        if self.job.checkpoint_uri is not None:
            ckpt_store = self.stores.for_uri(self.job.checkpoint_uri)
            for ml in roots.values():
                local = checkpoint_local_path(self.job, ml)
                for path in sorted(p for p in local.rglob("*") if p.is_file()):
                    ckpt_store.upload(path, join_uri(self.job.checkpoint_uri, str(path.relative_to(local))))
        return artifacts


def run_job(job: Job, options: RunOptions | None = None) -> JobResult:
    """Run ``job`` to the end and return its result (status, failure, JSON summary)."""
    return JobRun(job, options).run()


@contextlib.contextmanager
def stop_on_signals(run: JobRun, signals=(signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """While the block runs, SIGINT (Ctrl-C) and SIGTERM stop ``run`` as StopTrainingJob does
    instead of ending the process mid-way (main thread only, as Python's signals are)."""
    def handler(signum, frame) -> None:
        run.request_stop(f"{signal.Signals(signum).name} received")

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
