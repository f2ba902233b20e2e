"""Runs one transform job locally the way SageMaker's batch transform does.

1. List the input (``S3Prefix`` or ``ManifestFile``; hidden objects such as the
   ``.amazon.manifest`` that ``convert --manifest`` writes are left out, as ``run``'s Pipe
   channels leave them out) and check ``S3OutputPath``: an empty input or an unusable output
   fails the job before the server starts.
2. Start the model server (:mod:`.server`), read ``GET /execution-parameters``. Precedence, as
   SageMaker's: the request's ``BatchStrategy`` / ``MaxPayloadInMB`` /
   ``MaxConcurrentTransforms``, else the server's answer, else MultiRecord / 6 / 1.
3. Stream every object (:mod:`.reader`), split it into batches (:mod:`.records`), and POST
   them to ``/invocations``, ``MaxConcurrentTransforms`` at a time, across object boundaries.
   Answers are written in input order to a local file per object; when an object's last
   answer is in, the file is uploaded as ``S3OutputPath/<key below the prefix>.out`` (a
   local upload is a rename, an S3 upload appears whole), so an ``.out`` is always complete.
   ``AssembleWith: Line`` ends each answer with a newline where it lacks one; ``None``
   concatenates them as they are.
4. A request answered with an error status fails the job. For a request of several records,
   each record is then sent alone to find the one the model refuses, so the failure names the
   object, the record (line, or index and byte offset) and the server's message. Connection
   failures and 5xx answers are tried ``InvocationsMaxRetries`` more times first.
5. On failure or stop, requests in flight finish, nothing more is sent, and the ``.out`` of
   every input this run did not complete is removed: an earlier run's output never sits beside
   this run's looking like its result.

Memory stays bounded whatever the input size: each object is read a few chunks ahead, and at
most ``2 x MaxConcurrentTransforms`` requests (each at most ``MaxPayloadInMB``) and their
answers are held at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..runner import plan
from ..runner.progress import Display
from ..runner.runner import EXIT_COMPLETED, EXIT_FAILED, EXIT_STOPPED, MAX_FAILURE_REASON
from ..runner.storage import RetryPolicy, StorageError, StoredObject, Stores, is_s3, join_uri, local_path
from .processing import RecordError, RecordProcessor
from .reader import InputError, inflate, raw_chunks
from .records import Batch, Splitter
from .request import ModelSource, TransformJob
from .server import ModelServer, ServerError, fetch_model

DEFAULTS = {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6, "MaxConcurrentTransforms": 1}
MB = 1 << 20
RETRY_BACKOFF_S = 0.5


class TransformFailure(Exception):
    """The job fails with this reason (already phrased for FailureReason)."""


@dataclass
class TransformOptions:
    """How to run (not what: that is the :class:`TransformJob`)."""

    endpoint_url: str | None = None
    s3_timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    chunk_size: int = 8 * MB
    work_dir: Path | None = None  # default: a temporary folder, removed afterwards
    startup_timeout: float = 120.0
    progress: str = "auto"
    progress_stream: TextIO | None = None
    progress_interval: float = 10.0


@dataclass
class TransformResult:
    status: str
    failure: str | None
    summary: dict

    @property
    def exit_status(self) -> int:
        return {"Completed": EXIT_COMPLETED, "Stopped": EXIT_STOPPED}.get(self.status, EXIT_FAILED)


@dataclass
class Settings:
    """The batch settings in force: the request's, else the server's answer, else SageMaker's defaults."""

    batch_strategy: str
    max_payload_mb: int
    max_concurrent: int

    @classmethod
    def resolve(cls, job: TransformJob, answer: dict) -> Settings:
        strategy = {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord"}.get(
            str(answer.get("BatchStrategy", "")).upper())
        return cls(job.batch_strategy or strategy or DEFAULTS["BatchStrategy"],
                   job.max_payload_mb or _positive_int(answer.get("MaxPayloadInMB")) or DEFAULTS["MaxPayloadInMB"],
                   job.max_concurrent or _positive_int(answer.get("MaxConcurrentTransforms"))
                   or DEFAULTS["MaxConcurrentTransforms"])


def _positive_int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class Progress:
    """Counts shown while the job runs and reported in the summary."""

    def __init__(self, objects: int) -> None:
        self.objects_total = objects
        self.objects_done = 0
        self.records = 0
        self.requests = 0
        self.bytes_read = 0
        self.first_request_at: float | None = None
        self.last_answer_at: float | None = None

    @property
    def active_s(self) -> float:
        if self.first_request_at is None or self.last_answer_at is None:
            return 0.0
        return self.last_answer_at - self.first_request_at

    @property
    def records_per_s(self) -> float:
        return self.records / self.active_s if self.active_s > 0 else 0.0

    def describe(self) -> str:
        return (f"transform: {self.records:,} records, {self.records_per_s:,.0f} records/s, {self.requests:,} requests, "
                f"{self.bytes_read / 1e6:,.1f} MB read, {self.objects_done}/{self.objects_total} objects done")


class OutputFiles:
    """Each object's answers, in order, in a local file; uploaded as ``<key>.out`` when complete."""

    def __init__(self, job: TransformJob, stores: Stores, folder: Path) -> None:
        self.job = job
        self.store = stores.for_uri(job.output_path)
        self.folder = folder
        self.completed: set[str] = set()
        self._open: dict[str, tuple[Path, object]] = {}

    def uri(self, obj: StoredObject) -> str:
        return join_uri(self.job.output_path, obj.relative + ".out")

    def check(self) -> None:
        """Fail before the server starts on an output location that cannot be written."""
        if not is_s3(self.job.output_path):
            path = local_path(self.job.output_path)
            if path.exists() and not path.is_dir():
                raise TransformFailure(f"ClientError: S3OutputPath {path} is an existing file, not a folder")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TransformFailure(f"ClientError: S3OutputPath {path} cannot be created: {exc}") from None
            if not os.access(path, os.W_OK | os.X_OK):
                raise TransformFailure(f"ClientError: S3OutputPath {path} cannot be written by this user")
            return
        try:
            self.store.list_prefix(self.job.output_path.rstrip("/") + "/")
        except StorageError as exc:
            raise TransformFailure(f"ClientError: S3OutputPath {self.job.output_path} cannot be read: {exc}") from None

    def write(self, batch: Batch, answer: bytes) -> None:
        key = batch.obj.uri
        if key not in self._open:
            path = self.folder / f"{len(self.completed) + len(self._open)}.out"
            self._open[key] = (path, open(path, "wb"))
        path, handle = self._open[key]
        handle.write(answer)
        if batch.last:
            handle.close()
            del self._open[key]
            try:
                self.store.upload(path, self.uri(batch.obj))
            except StorageError as exc:
                raise TransformFailure(f"ClientError: uploading the output of {key} failed: {exc}") from None
            path.unlink()
            self.completed.add(key)

    def remove_incomplete(self, objects: list[StoredObject]) -> None:
        """Remove the ``.out`` of every input this run did not complete (an earlier run's, or none)."""
        for _, handle in self._open.values():
            handle.close()
        for obj in objects:
            if obj.uri not in self.completed:
                with contextlib.suppress(StorageError):
                    self.store.delete(self.uri(obj))


class TransformRun:
    """One run of ``job`` against ``model``. ``server`` may be given already started (tests
    share one); otherwise :meth:`run` starts and stops its own."""

    def __init__(self, job: TransformJob, model: ModelSource, options: TransformOptions | None = None,
                 server: ModelServer | None = None) -> None:
        self.job = job
        self.model = model
        self.options = options or TransformOptions()
        self.stores = Stores(self.options.endpoint_url, self.options.s3_timeout)
        self.display = Display(self.options.progress_stream, self.options.progress, self.options.progress_interval)
        self.server = server
        self.processor = RecordProcessor(job.processing, job.content_type, job.accept)
        self.progress = Progress(0)
        self.settings: Settings | None = None
        self.answer: dict = {}
        self.server_start_s: float | None = None
        self._stop_reason: str | None = None
        self._started = time.monotonic()

    def _note(self, message: str) -> None:
        self.display.host_line("transform", message)

    def request_stop(self, reason: str) -> None:
        """StopTransformJob (the signal handler of ``pipealgos transform``): nothing more is sent."""
        self._stop_reason = reason

    # -- the job ------------------------------------------------------------------------
    def run(self) -> TransformResult:
        work = Path(tempfile.mkdtemp(prefix="pipealgos-transform-", dir=self.options.work_dir))
        objects: list[StoredObject] = []
        outputs = OutputFiles(self.job, self.stores, work)
        own_server = self.server is None
        failure = None
        try:
            objects = self._list_inputs()
            outputs.check()
            self._start(work, own_server)
            self._transform(objects, outputs)
        except TransformFailure as exc:
            failure = str(exc)
            self._note(f"job failed: {failure}")
        finally:
            if failure is not None or self._stop_reason is not None:
                outputs.remove_incomplete(objects)
            if own_server and self.server is not None:
                self.server.stop()
            shutil.rmtree(work, ignore_errors=True)
            self.display.update([self.progress], force=True)
            self.display.close()
        return self._result(failure, outputs)

    def _list_inputs(self) -> list[StoredObject]:
        try:
            objects = plan.list_objects(self.stores.for_uri(self.job.input_uri), self.job.input_uri,
                                        self.job.data_type, "TransformInput", skip_hidden=True)
        except plan.PlanError as exc:
            raise TransformFailure(f"ClientError: {exc}") from None
        self.progress = Progress(len(objects))
        return objects

    def _start(self, work: Path, own_server: bool) -> None:
        started = time.monotonic()
        if own_server:
            try:
                model_dir = fetch_model(self.stores, self.model.uri, work / "model", self.options.retry)
            except (StorageError, OSError) as exc:
                raise TransformFailure(f"ClientError: the model {self.model.uri} cannot be read: {exc}") from None
            self.server = ModelServer(model_dir, self._server_environment(), self.display.host_line,
                                      self.options.startup_timeout, self.job.invocation_timeout)
            try:
                self.server.wait_ready()
            except ServerError as exc:
                raise TransformFailure(f"ClientError: {exc}") from None
        self.server_start_s = time.monotonic() - started
        self.answer = self.server.execution_parameters()
        self.settings = Settings.resolve(self.job, self.answer)
        self._note(f"model server ready in {self.server_start_s:.1f} s; /execution-parameters: "
                          f"{self.answer or 'no answer (defaults)'}; using {self.settings}")

    def _server_environment(self) -> dict[str, str]:
        env = {**dict(self.model.environment), **dict(self.job.environment), "SAGEMAKER_BATCH": "true"}
        if self.job.max_payload_mb is not None:
            env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(self.job.max_payload_mb)
        if self.job.batch_strategy is not None:
            env["SAGEMAKER_BATCH_STRATEGY"] = {"MultiRecord": "MULTI_RECORD"}.get(self.job.batch_strategy,
                                                                                "SINGLE_RECORD")
        if self.job.max_concurrent is not None:
            env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(self.job.max_concurrent)
        return env

    # -- the pipeline ---------------------------------------------------------------------
    def _batches(self, objects: list[StoredObject]) -> Iterator[Batch]:
        multi = self.settings.batch_strategy == "MultiRecord"
        max_bytes = self.settings.max_payload_mb * MB
        for obj in objects:
            store = self.stores.for_uri(obj.uri)
            chunks = self._counted(raw_chunks(store, obj, self.options.chunk_size, self.options.retry))
            if self.job.gzip:
                chunks = inflate(chunks, obj.uri, self.options.chunk_size)
            yield from Splitter(obj, self.job.split_type, max_bytes, multi).batches(chunks)

    def _counted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.progress.bytes_read += len(chunk)
            yield chunk

    def _transform(self, objects: list[StoredObject], outputs: OutputFiles) -> None:
        window: deque[Future] = deque()
        limit = 2 * self.settings.max_concurrent  # one batch being answered, one waiting, per connection
        pool = ThreadPoolExecutor(self.settings.max_concurrent, thread_name_prefix="invoke")
        try:
            for batch in self._reading(objects):
                if self._stop_reason is not None:
                    self._note(f"{self._stop_reason}: stopping the job (requests in flight finish)")
                    break
                window.append(pool.submit(self._answer, batch))
                while len(window) >= limit or (window and window[0].done()):
                    self._write(window.popleft(), outputs)
            while window and self._stop_reason is None:
                self._write(window.popleft(), outputs)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _reading(self, objects: list[StoredObject]) -> Iterator[Batch]:
        try:
            yield from self._batches(objects)
        except (InputError, StorageError) as exc:
            raise TransformFailure(f"ClientError: {exc}") from None

    def _write(self, future: Future, outputs: OutputFiles) -> None:
        batch, answer = future.result()
        outputs.write(batch, answer)
        self.progress.records += len(batch)
        self.progress.objects_done = len(outputs.completed)
        self.progress.last_answer_at = time.monotonic()
        self.display.update([self.progress])

    def _answer(self, batch: Batch) -> tuple[Batch, bytes]:
        """The bytes written for ``batch`` (runs on a pool thread)."""
        if not len(batch):
            return batch, b""
        if self.progress.first_request_at is None:
            self.progress.first_request_at = time.monotonic()
        records = [batch.record(i) for i in range(len(batch))] if self.processor.active else None
        try:
            body = self.processor.request_body(records) if records is not None else batch.payload
        except RecordError as exc:
            raise self._record_failure(batch, exc.index, str(exc)) from None
        status, answer = self._post(body, batch)
        if status != 200:
            raise self._locate_failure(batch, status, answer)
        if self.job.assemble_with == "Line" and answer and not answer.endswith(b"\n"):
            answer += b"\n"
        if records is None or not self.processor.processing.per_record:
            return batch, answer
        try:
            return batch, self.processor.output_body(records, answer)
        except RecordError as exc:
            raise self._record_failure(batch, exc.index, str(exc)) from None

    def _post(self, body: bytes, batch: Batch) -> tuple[int, bytes]:
        """(status, body) of one invocation; connection failures and 5xx are retried."""
        self.progress.requests += 1
        for attempt in range(self.job.max_retries + 1):
            try:
                status, answer = self.server.invoke(body, self.job.content_type, self.job.accept)
            except ConnectionError as exc:
                if attempt == self.job.max_retries or not self.server.alive():
                    raise TransformFailure(f"ClientError: {batch.obj.uri}: {self._span(batch)}: {exc} (after "
                                           f"{attempt + 1} attempt(s); InvocationsMaxRetries "
                                           f"{self.job.max_retries}){self._server_log()}") from None
            else:
                if status < 500 or attempt == self.job.max_retries:
                    return status, answer
            time.sleep(RETRY_BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _server_log(self) -> str:
        if self.server.alive():
            return ""
        return f"; the model server exited with status {self.server.proc.returncode}, its log ends:\n" \
               f"{self.server.log_tail()}"

    def _locate_failure(self, batch: Batch, status: int, answer: bytes) -> TransformFailure:
        """The failure of a refused request, naming the record: each record is sent alone until one is refused."""
        if len(batch) > 1:
            for i in range(len(batch)):
                record = [batch.record(i)]
                body = self.processor.request_body(record) if self.processor.active else record[0]
                single_status, single_answer = self._post(body, batch)
                if single_status != 200:
                    return self._record_failure(batch, i, _server_message(single_status, single_answer))
            return TransformFailure(f"ClientError: {batch.obj.uri}: {self._span(batch)}: "
                                    f"{_server_message(status, answer)} (each record alone is answered: the request "
                                    "as a whole was refused; lower MaxPayloadInMB or use SingleRecord)")
        return self._record_failure(batch, 0, _server_message(status, answer))

    def _record_failure(self, batch: Batch, index: int, message: str) -> TransformFailure:
        return TransformFailure(f"ClientError: {batch.obj.uri}: {batch.describe(index)}: {message}")

    def _span(self, batch: Batch) -> str:
        if len(batch) == 1:
            return batch.describe(0)
        return f"the request holding {batch.describe(0)} to {batch.describe(len(batch) - 1)}"

    # -- the outcome ----------------------------------------------------------------------
    def _result(self, failure: str | None, outputs: OutputFiles) -> TransformResult:
        if failure is not None:
            status = "Failed"
        elif self._stop_reason is not None:
            status = "Stopped"
        else:
            status = "Completed"
        reason = failure[:MAX_FAILURE_REASON] if failure else None
        progress = self.progress
        summary = {
            "TransformJobName": self.job.name,
            "TransformJobStatus": status,
            "FailureReason": reason,
            "ModelName": self.job.model_name,
            "ModelDataUrl": self.model.uri,
            "TransformInput": {"S3Uri": self.job.input_uri, "Objects": progress.objects_total},
            "TransformOutput": {"S3OutputPath": self.job.output_path, "Outputs": len(outputs.completed)},
            "BatchStrategy": self.settings.batch_strategy if self.settings else None,
            "MaxPayloadInMB": self.settings.max_payload_mb if self.settings else None,
            "MaxConcurrentTransforms": self.settings.max_concurrent if self.settings else None,
            "ExecutionParameters": self.answer or None,
            "Records": progress.records,
            "Requests": progress.requests,
            "BytesRead": progress.bytes_read,
            "ServerStartSeconds": None if self.server_start_s is None else round(self.server_start_s, 3),
            "TransformSeconds": round(progress.active_s, 3),
            "RecordsPerSecond": round(progress.records_per_s, 1),
            "TotalSeconds": round(time.monotonic() - self._started, 3),
        }
        return TransformResult(status, reason, summary)


def _server_message(status: int, answer: bytes) -> str:
    text = answer.decode("utf-8", "replace").strip()
    return f"the model server answered {status}: {text[:500]}"

