"""``pipealgos export-model``, ``import-model`` and ``inspect``: models moved between SageMaker
and pipealgos, and looked into.

* ``export-model --format sagemaker MODEL OUT.tar.gz``: our model (a folder, or its
  ``model.tar.gz``) as the ``model.tar.gz`` SageMaker's built-in image hosts (``model_algo-1``
  in the algorithm's SageMaker layout, :mod:`.sagemaker_format`).
* ``import-model SAGEMAKER_MODEL OUT_DIR [--algorithm NAME]``: a SageMaker built-in's model (its
  ``model.tar.gz``, or the folder it unpacks to) saved as ours. The manifest's hyperparameters
  are what SageMaker's files tell (``feature_dim`` and the shape-giving ones, and for linear
  learner the predictor and loss): the training job's other settings are not in the artifact.
* ``inspect MODEL [--numpy DIR] [--vocabulary FILE]``: what a model (ours or SageMaker's) is,
  with per algorithm what users ask of it (:data:`SUMMARIES`); ``--numpy`` writes each array
  as ``DIR/<name>.npy``.

Only the command functions print; everything else returns values.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

EXIT_ERROR = 1
TOP_WORDS = 10


def register(subparsers) -> None:
    """Add the three commands to the CLI (their heavy imports happen when one runs)."""
    export = subparsers.add_parser("export-model", help="write a pipealgos model as a model.tar.gz SageMaker's "
                                   "built-in image can host")
    export.add_argument("--format", choices=("sagemaker",), default="sagemaker", help="the format to write")
    export.add_argument("model", type=Path, help="a pipealgos model folder, or its model.tar.gz")
    export.add_argument("output", type=Path, help="the model.tar.gz to write")
    export.set_defaults(func=_export)

    imported = subparsers.add_parser("import-model", help="save a model trained by SageMaker's built-in "
                                     "container as a pipealgos model")
    imported.add_argument("model", type=Path, help="SageMaker's model.tar.gz, or the folder holding model_algo-1")
    imported.add_argument("output", type=Path, help="the folder to write the pipealgos model into")
    imported.add_argument("--algorithm", help="the model's algorithm (default: found from the file's layout)")
    imported.set_defaults(func=_import)

    inspect = subparsers.add_parser("inspect", help="print what a model is: algorithm, shapes, hyperparameters and "
                                    "per algorithm what it learned")
    inspect.add_argument("model", type=Path, help="a model folder or model.tar.gz, pipealgos' or SageMaker's")
    inspect.add_argument("--algorithm", help="the algorithm of a SageMaker model (default: found from its layout)")
    inspect.add_argument("--numpy", type=Path, metavar="DIR", help="also write each array as DIR/<name>.npy")
    inspect.add_argument("--vocabulary", type=Path, metavar="FILE",
                         help="topic models: one word per line, in feature order, to print each topic's top words")
    inspect.set_defaults(func=_inspect)


def _run(command: str, action: Callable[[], list[str]]) -> int:
    """Print ``action``'s lines, or its error as one line naming the command; returns the exit status."""
    from pipealgos.io import DataError
    from pipealgos.platform.model_store import ModelFormatError
    from pipealgos.platform.registry import UnknownAlgorithm

    try:
        lines = action()
    except (ModelFormatError, UnknownAlgorithm, DataError, OSError) as exc:
        print(f"pipealgos {command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print("\n".join(lines))
    return 0


def _export(args: argparse.Namespace) -> int:
    return _run("export-model", lambda: export_model(args.model, args.output))


def _import(args: argparse.Namespace) -> int:
    return _run("import-model", lambda: import_model(args.model, args.output, args.algorithm))


def _inspect(args: argparse.Namespace) -> int:
    return _run("inspect", lambda: inspect_model(args.model, args.algorithm, args.numpy, args.vocabulary))


def export_model(model: Path, output: Path) -> list[str]:
    from pipealgos.platform.sagemaker_artifact import export_files, write_tar_gz
    from pipealgos.serve.model import load_stored_model

    stored = load_stored_model(model)
    files = export_files(stored)
    write_tar_gz(files, output)
    return [f"wrote {output}: SageMaker {stored.algorithm} model ({', '.join(sorted(files))})"]


def import_model(model: Path, output: Path, algorithm: str | None) -> list[str]:
    from pipealgos.platform.model_store import MANIFEST, ModelFormatError, save_model
    from pipealgos.serve.model import load_stored_model

    if (output / MANIFEST).exists():
        raise ModelFormatError(f"{output} already holds a model ({MANIFEST}); choose an empty folder or remove it")
    stored = load_stored_model(model, algorithm)
    save_model(output, stored.algorithm, stored.hyperparameters, stored.arrays,
               resolved=stored.resolved_hyperparameters, feature_dim=stored.feature_dim)
    return [f"wrote {output}: pipealgos {stored.algorithm} model, feature_dim {stored.feature_dim}"]


def inspect_model(model: Path, algorithm: str | None, numpy_dir: Path | None, vocabulary: Path | None) -> list[str]:
    from pipealgos.serve.model import load_stored_model

    stored = load_stored_model(model, algorithm)
    described_format = stored.manifest.get("format", "pipealgos-model")
    lines = [f"model: {model}", f"format: {described_format}", f"algorithm: {stored.algorithm}",
             f"feature_dim: {stored.feature_dim}", f"hyperparameters: {stored.resolved_hyperparameters}", "arrays:"]
    lines += [f"  {name}: shape {tuple(array.shape)}, {array.dtype}" for name, array in stored.arrays.items()]
    words = read_vocabulary(vocabulary) if vocabulary else None
    summary = SUMMARIES.get(stored.algorithm)
    if summary:
        with np.printoptions(precision=6, suppress=True, linewidth=120, threshold=2000):
            lines += summary(stored.arrays, stored.resolved_hyperparameters, words)
    if numpy_dir:
        lines += [f"wrote {path}" for path in write_numpy(stored.arrays, numpy_dir)]
    return lines


def write_numpy(arrays: dict[str, np.ndarray], folder: Path) -> list[Path]:
    """Each array as ``folder/<name>.npy`` (characters other than letters, digits, ``.-_`` in a
    name become ``_``)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, array in arrays.items():
        path = folder / (re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".npy")
        np.save(path, array, allow_pickle=False)
        paths.append(path)
    return paths


def read_vocabulary(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------------------------------------
# Per algorithm: what users keep asking a model for. Each gets (arrays, resolved hyperparameters,
# vocabulary or None) and returns lines.


def pca_summary(arrays, hyperparameters, vocabulary) -> list[str]:
    """Components from the largest singular value down, with the share of the variance the kept
    components capture that each explains (s² / Σ s²; the data's total variance is not stored).
    A NaN singular value (SageMaker's artifacts can hold one) is shown and left out of the sum."""
    s = arrays["s"].astype(np.float64)
    variance = np.where(np.isfinite(s), s * s, np.nan)
    total = np.nansum(variance)
    lines = ["principal components (largest first; column = column of v and of each projection):"]
    for column in np.argsort(-np.nan_to_num(variance, nan=-1.0), kind="stable"):
        ratio = variance[column] / total if total > 0 else np.nan
        lines.append(f"  column {column}: singular value {s[column]:.6g}, explained variance ratio {ratio:.4f}")
    if "mean" in arrays:
        lines.append(f"mean: {arrays['mean'].reshape(-1)}")
    return lines


def kmeans_summary(arrays, hyperparameters, vocabulary) -> list[str]:
    centroids = arrays["centroids"]
    return ["centroids (closest_cluster = row):", *(f"  {i}: {row}" for i, row in enumerate(centroids))]


def linear_learner_summary(arrays, hyperparameters, vocabulary) -> list[str]:
    """Coefficients per feature as the model applies them to raw features (normalisation is
    folded into the weights, so they are in the original feature and label scale)."""
    weight, bias = arrays["weight"], arrays["bias"]
    names = vocabulary if vocabulary and len(vocabulary) == weight.shape[0] else None
    lines = [f"predictor_type: {hyperparameters.get('predictor_type')}, loss: {hyperparameters.get('loss')}",
             "coefficients (original feature scale; one column per output):"]
    lines += [f"  {names[i] if names else f'feature {i}'}: {weight[i]}" for i in range(weight.shape[0])]
    lines.append(f"  bias: {bias}")
    if "threshold" in arrays:
        lines.append(f"decision threshold on the margin: {float(arrays['threshold'][0]):.6g}")
    return lines


def topic_summary(topic_word: np.ndarray, vocabulary: list[str] | None) -> list[str]:
    """Top words of each topic (rows of ``topic_word``: topics × vocabulary, larger = likelier);
    word indices when no vocabulary is given."""
    if vocabulary is not None and len(vocabulary) != topic_word.shape[1]:
        return [f"vocabulary has {len(vocabulary)} words, the model {topic_word.shape[1]}: top words not printed"]
    lines = [f"top {TOP_WORDS} words per topic:"]
    for topic, row in enumerate(topic_word):
        top = np.argsort(-row, kind="stable")[:TOP_WORDS]
        words = [vocabulary[i] for i in top] if vocabulary is not None else [str(i) for i in top]
        lines.append(f"  topic {topic}: {' '.join(words)}")
    return lines


def lda_summary(arrays, hyperparameters, vocabulary) -> list[str]:
    return [f"alpha: {arrays['alpha']}", *topic_summary(arrays["beta"], vocabulary)]


def ntm_summary(arrays, hyperparameters, vocabulary) -> list[str]:
    """The decoder's ``projection_weight`` (vocabulary × topics): column k scores words for topic k."""
    return topic_summary(arrays["projection_weight"].T, vocabulary)


SUMMARIES: dict[str, Callable] = {
    "pca": pca_summary,
    "kmeans": kmeans_summary,
    "linear-learner": linear_learner_summary,
    "lda": lda_summary,
    "ntm": ntm_summary,
}
