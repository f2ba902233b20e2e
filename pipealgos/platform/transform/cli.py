"""``pipealgos transform JOB.json``: run a CreateTransformJob request locally; print the JSON summary.

The model: ``--model`` (a model.tar.gz path or s3:// URI, a model folder, or a CreateModel
request .json), else the CreateModel request ``<ModelName>.json`` beside JOB.json.

Exit status: 0 Completed, 1 Failed, 3 Stopped (Ctrl-C / SIGTERM, as StopTransformJob), 2 for a
request that is not valid (the problems are listed with their JSON paths).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..runner.cli import EXIT_BAD_REQUEST, add_shared_arguments, print_summary


def register(subparsers) -> None:
    p = subparsers.add_parser("transform", help="run a CreateTransformJob request (JSON) locally",
                              description=__doc__)
    p.add_argument("job", type=Path, help="JSON file holding the CreateTransformJob request")
    p.add_argument("--model", help="model.tar.gz (path or s3:// URI), model folder, or CreateModel request .json "
                                   "(default: <ModelName>.json beside JOB.json)")
    p.add_argument("--work-dir", type=Path, help="where the model and unfinished outputs go (default: a temporary "
                                                 "folder)")
    p.add_argument("--chunk-mb", type=float, default=8, help="size of one ranged GET of an input object, in MB "
                                                             "(default 8)")
    p.add_argument("--startup-timeout", type=float, default=120.0,
                   help="seconds the model server may take to answer /ping (default 120)")
    add_shared_arguments(p)
    p.set_defaults(func=_transform)


def _transform(args) -> int:
    from ..runner.runner import stop_on_signals
    from ..runner.storage import RetryPolicy
    from .request import TransformSpecError, load_transform_job, resolve_model
    from .transformer import TransformOptions, TransformRun

    try:
        job = load_transform_job(args.job)
        model = resolve_model(job, args.job, args.model)
    except (TransformSpecError, OSError) as exc:
        sys.stderr.write(f"pipealgos transform: {exc}\n")
        return EXIT_BAD_REQUEST
    if args.s3_attempts < 1 or not args.s3_timeout > 0 or not args.chunk_mb > 0:
        sys.stderr.write(f"pipealgos transform: --s3-attempts must be >= 1, --s3-timeout and --chunk-mb > 0 (got "
                         f"{args.s3_attempts}, {args.s3_timeout:g} and {args.chunk_mb:g})\n")
        return EXIT_BAD_REQUEST
    options = TransformOptions(endpoint_url=args.endpoint_url, s3_timeout=args.s3_timeout,
                               retry=RetryPolicy(attempts=args.s3_attempts), chunk_size=int(args.chunk_mb * (1 << 20)),
                               work_dir=args.work_dir, startup_timeout=args.startup_timeout, progress=args.progress)
    run = TransformRun(job, model, options)
    with stop_on_signals(run):
        result = run.run()
    print_summary(result.summary, args.summary)
    return result.exit_status
