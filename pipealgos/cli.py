"""Command line: ``pipealgos train|serve|run|transform|convert|export-model|import-model|inspect``, and the ``train`` / ``serve`` scripts
that SageMaker invokes as ``docker run IMAGE train``."""

from __future__ import annotations

import argparse
import sys


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="run a training job from an ML root (SageMaker's `train`)")
    p.add_argument("--ml-root", help="ML root (default: $PIPEALGOS_ML_ROOT, else /opt/ml)")
    p.add_argument("--algorithm", help="algorithm name (default: $PIPEALGOS_ALGORITHM)")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from pipealgos.platform.config import MLRoot
    from pipealgos.platform.metrics import configure_logging
    from pipealgos.platform.train import run_training

    configure_logging()
    return run_training(MLRoot.resolve(args.ml_root), args.algorithm)


def build_parser() -> argparse.ArgumentParser:
    from pipealgos.io import convert
    from pipealgos.platform import model_tools
    from pipealgos.platform.runner import cli as runner_cli
    from pipealgos.platform.transform import cli as transform_cli
    from pipealgos.serve import cli as serve_cli

    parser = argparse.ArgumentParser(prog="pipealgos", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    for register in (serve_cli.register, runner_cli.register, transform_cli.register, convert.register,
                     model_tools.register):
        register(sub)  # each imports its heavy modules only when its command runs
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def train_main() -> None:
    """The ``train`` script: ``docker run IMAGE train`` (extra arguments as for ``pipealgos train``)."""
    sys.exit(main(["train", *sys.argv[1:]]))


def serve_main() -> None:
    """The ``serve`` script: ``docker run IMAGE serve``."""
    sys.exit(main(["serve", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
