"""The Flask app: SageMaker's hosting contract over one loaded model.

Routes: ``GET /ping`` (200, empty, once the model is loaded — it is loaded before the app
exists), ``POST /invocations`` and ``POST /endpoints/<name>/invocations`` (the path boto3's
``invoke_endpoint`` uses when pointed at a server with ``endpoint_url``), and
``GET /execution-parameters`` for batch transform.

Every request error is answered in plain text with its status (400 malformed body, 406
unsupported Accept, 408 body slower than ``PIPEALGOS_REQUEST_READ_TIMEOUT``, 413 body over
``SAGEMAKER_MAX_PAYLOAD_IN_MB``, 415 unsupported Content-Type); anything unexpected is logged
with its traceback and answered 500. None of them affects the next request.

Environment (read once, when the app is created): ``SAGEMAKER_MAX_PAYLOAD_IN_MB`` (default 6),
``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` (default ``application/json``),
``SAGEMAKER_MODEL_SERVER_WORKERS`` (reported as ``MaxConcurrentTransforms``),
``PIPEALGOS_REQUEST_READ_TIMEOUT`` (default 20 s).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from flask import Flask, Response, request
from werkzeug.exceptions import ClientDisconnected

from . import formats
from .model import ServedModel, load_served_model
from .settings import ServeConfigError, default_workers, env_number, request_read_timeout

log = logging.getLogger("pipealgos.serve")

DEFAULT_MAX_PAYLOAD_MB = 6
MAX_TRANSFORM_BUDGET_MB = 100  # batch transform: MaxConcurrentTransforms x MaxPayloadInMB <= 100
DRAIN_LIMIT_BYTES = 128 << 20  # oversized bodies up to this size are read and dropped, not cut off


def create_app(model_dir: Path) -> Flask:
    """Load the model in ``model_dir`` once and return the app serving it.

    ``app.extensions["pipealgos"]`` holds the :class:`~pipealgos.serve.model.ServedModel`.
    """
    served = load_served_model(Path(model_dir))
    max_payload_mb = env_number("SAGEMAKER_MAX_PAYLOAD_IN_MB", DEFAULT_MAX_PAYLOAD_MB, float, minimum=0.001)
    max_bytes = int(max_payload_mb * 1024 * 1024)
    default_accept = formats.media_type(os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT")) or formats.JSON
    if default_accept not in formats.RESPONSE_TYPES:
        raise ServeConfigError(f"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT='{default_accept}' is not a response type "
                               f"pipealgos can produce; use one of {', '.join(formats.RESPONSE_TYPES)}")
    execution_parameters = _execution_parameters(max_payload_mb)
    body_deadlines = BodyDeadlines(request_read_timeout())

    app = Flask("pipealgos.serve")
    app.extensions["pipealgos"] = served

    @app.get("/ping")
    def ping() -> Response:
        return Response(status=200)

    @app.get("/execution-parameters")
    def execution() -> Response:
        return Response(execution_parameters, status=200, mimetype=formats.JSON)

    @app.post("/invocations")
    @app.post("/endpoints/<name>/invocations")
    def invocations(name: str | None = None) -> Response:
        try:
            # The body first, even when the Accept header is refused: an unread body would be
            # left on a kept-alive connection, which gunicorn then closes after the answer.
            body = body_deadlines.read(lambda: _read_body(max_bytes, max_payload_mb))
            accept = formats.choose_response_type(request.accept_mimetypes, default_accept)
            content = _invoke(served, body, request.headers.get("Content-Type"), accept)
            return Response(content, status=200, content_type=accept)
        except formats.RequestError as exc:
            return Response(exc.message + "\n", status=exc.status, mimetype="text/plain")
        except Exception as exc:  # keep serving: log the trace, tell the caller what failed
            log.exception("inference failed")
            return Response(f"internal error during inference: {type(exc).__name__}: {exc}\n",
                            status=500, mimetype="text/plain")

    return app


class BodyDeadlines:
    """Bounds how long a request body may take to arrive (``PIPEALGOS_REQUEST_READ_TIMEOUT``).

    Under gunicorn each body is read on a worker thread that blocks on the client's socket. One
    watcher thread per worker process keeps the deadlines of the bodies being read; when one
    passes it shuts the reading half of that socket, which ends the blocked read at once, and
    the request is answered 408. Per-read socket timeouts (see ``server.py``) catch a client
    that goes silent, but not one trickling a byte a second: only a deadline for the whole
    body frees the thread for ``/ping`` and other clients. Without gunicorn's socket (Flask's
    test client) bodies are read unwatched.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._changed = threading.Condition()
        self._watched: dict[object, tuple[float, socket.socket, list[bool]]] = {}  # token -> (deadline, socket, [expired])
        self._watcher_pid = None  # the watcher thread belongs to one process: workers fork after the app is built

    def read(self, read_body):
        """``read_body()`` under the deadline; raises :class:`formats.RequestTimeout` when it
        passes, or when the client stays silent longer than the socket's own read timeout."""
        expired = [False]
        try:
            with self._watch(request.environ.get("gunicorn.socket"), expired):
                body = read_body()
        except (OSError, ClientDisconnected) as exc:  # the shut socket ends the body early, or
            # SO_RCVTIMEO's EAGAIN on a silent client; anything else: the client went away
            if not (expired[0] or isinstance(exc, (BlockingIOError, TimeoutError))):
                raise
            expired[0] = True
        if expired[0]:  # the rest of the body may never come: server.py closes the connection after a 408
            raise formats.RequestTimeout(f"the request body did not arrive within PIPEALGOS_REQUEST_READ_TIMEOUT="
                                         f"{self.seconds:g} s: send the whole body at once (or raise the setting)")
        return body

    @contextmanager
    def _watch(self, client: socket.socket | None, expired: list[bool]):
        if client is None:
            yield
            return
        token = object()
        with self._changed:
            self._start_watcher()
            self._watched[token] = (time.monotonic() + self.seconds, client, expired)
            self._changed.notify()
        try:
            yield
        finally:
            with self._changed:
                del self._watched[token]

    def _start_watcher(self) -> None:
        if self._watcher_pid != os.getpid():
            self._watcher_pid = os.getpid()
            threading.Thread(target=self._watch_deadlines, name="body-deadlines", daemon=True).start()

    def _watch_deadlines(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                pending = []
                for deadline, client, expired in self._watched.values():
                    if expired[0]:
                        continue
                    if deadline <= now:
                        expired[0] = True
                        with suppress(OSError):
                            client.shutdown(socket.SHUT_RD)
                    else:
                        pending.append(deadline)
                self._changed.wait(min(pending) - now if pending else None)


def _invoke(served: ServedModel, body: bytes, content_type: str | None, accept: str) -> bytes:
    features = formats.decode_request(body, content_type, served.feature_dim, served.request_types, served.spec.name)
    outputs, keys = served.predict(features)
    return formats.encode_response(outputs, keys, served.response_key, accept)


def _read_body(max_bytes: int, max_payload_mb: float) -> bytes:
    """The request body, refusing more than ``max_bytes``. An oversized body is still read
    and discarded (up to ``DRAIN_LIMIT_BYTES``): clients send the whole body before reading
    the answer, so closing early would hand them a broken pipe instead of the 413."""
    announced = request.content_length
    if announced is not None and announced > max_bytes:
        _discard(request.stream, announced)
        raise _too_large(f"{announced} bytes", max_bytes, max_payload_mb)
    body = request.stream.read(max_bytes + 1)
    if len(body) > max_bytes:
        _discard(request.stream, DRAIN_LIMIT_BYTES)
        raise _too_large(f"more than {max_bytes} bytes", max_bytes, max_payload_mb)
    return body


def _discard(stream, size: int) -> None:
    if size > DRAIN_LIMIT_BYTES:
        return  # not worth reading: the connection is dropped instead
    remaining = size
    while remaining > 0:
        chunk = stream.read(min(1 << 20, remaining))
        if not chunk:
            return
        remaining -= len(chunk)


def _too_large(size: str, max_bytes: int, max_payload_mb: float) -> formats.PayloadTooLarge:
    return formats.PayloadTooLarge(f"request body of {size} exceeds SAGEMAKER_MAX_PAYLOAD_IN_MB={max_payload_mb:g} "
                                   f"({max_bytes} bytes): split the records over several requests")


def _execution_parameters(max_payload_mb: float) -> str:
    """Batch transform's defaults for this server: one transform per worker, multi-record."""
    payload = max(1, int(max_payload_mb))
    concurrency = max(1, min(default_workers(), MAX_TRANSFORM_BUDGET_MB // payload))
    return json.dumps({"MaxConcurrentTransforms": concurrency, "BatchStrategy": "MULTI_RECORD",
                       "MaxPayloadInMB": payload})
