"""``pipealgos serve`` (and the ``serve`` script SageMaker runs as ``docker run IMAGE serve``)."""

from __future__ import annotations

import argparse
import os
import sys

from pipealgos.platform.config import MLRoot


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve the model in <ml-root>/model over HTTP (SageMaker's `serve`)")
    p.add_argument("--ml-root", help="ML root (default: $PIPEALGOS_ML_ROOT, else /opt/ml); the model is its model/")
    p.add_argument("--model-dir", help="serve this model folder instead of <ml-root>/model")
    p.add_argument("--algorithm", help="algorithm of a model trained by SageMaker (a model_algo-1 without our "
                                       "manifest.json; default: $PIPEALGOS_ALGORITHM, else found from the file's layout)")
    p.add_argument("--host", default=None,
                   help="address to bind (default: 127.0.0.1, so a model served on a laptop stays off the network; "
                        "0.0.0.0 when serve runs as a container's main process, PID 1, as the image's `serve` does "
                        "under SageMaker, or when SAGEMAKER_BIND_TO_PORT is set)")
    p.add_argument("--port", type=int, default=None, help="port (default: $SAGEMAKER_BIND_TO_PORT, else 8080)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: $SAGEMAKER_MODEL_SERVER_WORKERS, else the CPU count)")
    p.add_argument("--timeout", type=int, default=None,
                   help="request timeout in seconds (default: $SAGEMAKER_MODEL_SERVER_TIMEOUT, else 60)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from pipealgos.platform.model_store import ModelFormatError
    from pipealgos.platform.registry import UnknownAlgorithm

    from .server import run_server
    from .settings import ServeConfigError, default_host, default_port, default_timeout, default_workers

    if args.algorithm:
        os.environ["PIPEALGOS_ALGORITHM"] = args.algorithm  # the workers load the model and inherit it
    try:
        model_dir = args.model_dir or MLRoot.resolve(args.ml_root).model_dir
        run_server(model_dir, port=args.port or default_port(), workers=args.workers or default_workers(),
                   timeout=args.timeout or default_timeout(), host=args.host or default_host())
    except (ModelFormatError, UnknownAlgorithm, ServeConfigError, OSError) as exc:
        print(f"serve: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
