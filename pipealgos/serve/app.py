"""The Flask app: SageMaker's hosting contract over one loaded model.

Routes: ``GET /ping`` (200, empty, once the model is loaded — it is loaded before the app
exists), ``POST /invocations`` and ``POST /endpoints/<name>/invocations`` (the path boto3's
``invoke_endpoint`` uses when pointed at a server with ``endpoint_url``), and
``GET /execution-parameters`` for batch transform.

Every request error is answered in plain text with its status (400 malformed body, 406
unsupported Accept, 413 body over ``SAGEMAKER_MAX_PAYLOAD_IN_MB``, 415 unsupported
Content-Type); anything unexpected is logged with its traceback and answered 500. None of
them affects the next request.

Environment (read once, when the app is created): ``SAGEMAKER_MAX_PAYLOAD_IN_MB`` (default 6),
``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` (default ``application/json``),
``SAGEMAKER_MODEL_SERVER_WORKERS`` (reported as ``MaxConcurrentTransforms``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from flask import Flask, Response, request

from . import formats
from .model import ServedModel, load_served_model
from .settings import ServeConfigError, default_workers, env_number

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
            accept = formats.choose_response_type(request.accept_mimetypes, default_accept)
            body = _read_body(max_bytes, max_payload_mb)
            content = _invoke(served, body, request.headers.get("Content-Type"), accept)
            return Response(content, status=200, content_type=accept)
        except formats.RequestError as exc:
            return Response(exc.message + "\n", status=exc.status, mimetype="text/plain")
        except Exception as exc:  # keep serving: log the trace, tell the caller what failed
            log.exception("inference failed")
            return Response(f"internal error during inference: {type(exc).__name__}: {exc}\n",
                            status=500, mimetype="text/plain")

    return app


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
