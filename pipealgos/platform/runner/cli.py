"""``pipealgos run JOB.json``: run a CreateTrainingJob request locally; print the JSON summary.

Exit status: 0 Completed, 1 Failed, 3 Stopped (MaxRuntimeInSeconds, or Ctrl-C / SIGTERM, which
stop the job as StopTrainingJob does), 2 for a request that is not valid (the problems are listed
with their JSON paths).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXIT_BAD_REQUEST = 2


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="run a CreateTrainingJob request (JSON) locally",
                              description=__doc__)
    p.add_argument("job", type=Path, help="JSON file holding the CreateTrainingJob request")
    p.add_argument("--work-dir", type=Path, help="where the hosts' ML roots go (default: a temporary folder)")
    p.add_argument("--keep-work-dir", action="store_true", help="keep the ML roots and host logs afterwards")
    p.add_argument("--workers", type=int, default=8, help="parallel GETs per channel and host (default 8)")
    p.add_argument("--chunk-mb", type=float, default=8, help="size of one ranged GET in MB (default 8)")
    p.add_argument("--startup-buffer-mb", type=float, default=512,
                   help="Pipe mode: MB all feeders together may fetch before the hosts open their FIFOs, so the "
                        "download overlaps the hosts' start-up (default 512)")
    p.add_argument("--memory-cap-mb", type=float, default=64,
                   help="Pipe mode: bytes fetched ahead per channel and host, in MB (default 64)")
    p.add_argument("--stop-grace", type=float, default=120.0,
                   help="seconds between SIGTERM and SIGKILL when MaxRuntimeInSeconds is reached (default 120)")
    p.add_argument("--interrupt-grace", type=float, default=10.0,
                   help="seconds between SIGTERM and SIGKILL to the hosts when Ctrl-C or SIGTERM stops the job "
                        "(default 10)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the artifacts of an earlier job of the same name (refused otherwise, as "
                        "SageMaker refuses a duplicate TrainingJobName)")
    add_shared_arguments(p)
    p.set_defaults(func=_run)


def add_shared_arguments(p) -> None:
    """The S3, display and summary options ``run`` shares with ``pipealgos transform``."""
    p.add_argument("--endpoint-url", help="S3 endpoint for s3:// URIs (default: $AWS_ENDPOINT_URL_S3, else AWS)")
    p.add_argument("--s3-timeout", type=float, default=60.0,
                   help="seconds an S3 request waits for the server, to connect and for each read (default 60)")
    p.add_argument("--s3-attempts", type=int, default=5,
                   help="tries in all for each ranged read before the job fails (default 5); a stalled server "
                        "fails the job after about attempts x timeout")
    p.add_argument("--progress", choices=("auto", "tty", "plain"), default="auto",
                   help="status display: redrawn line on a terminal, log lines otherwise (default auto)")
    p.add_argument("--summary", type=Path, help="also write the JSON summary to this file")


def print_summary(summary: dict, path: Path | None) -> None:
    """The JSON summary on stdout, and in ``path`` when given."""
    text = json.dumps(summary, indent=2)
    print(text)
    if path:
        path.write_text(text + "\n")


def _run(args) -> int:
    from .feeder import FeedOptions
    from .job import JobSpecError, load_job
    from .runner import JobRun, RunOptions, stop_on_signals
    from .storage import RetryPolicy

    try:
        job = load_job(args.job)
    except (JobSpecError, OSError) as exc:
        sys.stderr.write(f"pipealgos run: {exc}\n")
        return EXIT_BAD_REQUEST
    if args.s3_attempts < 1 or not args.s3_timeout > 0:
        sys.stderr.write(f"pipealgos run: --s3-attempts must be >= 1 and --s3-timeout > 0 "
                         f"(got {args.s3_attempts} and {args.s3_timeout:g})\n")
        return EXIT_BAD_REQUEST
    feed = FeedOptions(workers=args.workers, chunk_size=int(args.chunk_mb * (1 << 20)),
                       memory_cap=int(args.memory_cap_mb * (1 << 20)), retry=RetryPolicy(attempts=args.s3_attempts))
    options = RunOptions(work_dir=args.work_dir, keep_work_dir=args.keep_work_dir, endpoint_url=args.endpoint_url,
                         s3_timeout=args.s3_timeout, startup_buffer=int(args.startup_buffer_mb * (1 << 20)),
                         feed=feed, stop_grace=args.stop_grace, interrupt_grace=args.interrupt_grace,
                         overwrite=args.overwrite, progress=args.progress)
    run = JobRun(job, options)
    with stop_on_signals(run):
        result = run.run()
    print_summary(result.summary, args.summary)
    return result.exit_status
