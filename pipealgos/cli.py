"""Command line: ``pipealgos train|serve|run|convert``, and the ``train`` / ``serve`` scripts
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
    parser = argparse.ArgumentParser(prog="pipealgos", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _extra_commands():
    """Commands whose modules may pull heavier dependencies are registered lazily by name."""
    registrars = []
    for module_name in ("pipealgos.io.convert", "pipealgos.serve.cli", "pipealgos.platform.runner.cli"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        registrars.append(module.register)
    return registrars


_EXTRA_COMMANDS = _extra_commands()


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
