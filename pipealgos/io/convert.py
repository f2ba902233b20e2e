"""``pipealgos convert``: CSV, ``.npy`` and scipy-sparse ``.npz`` files -> RecordIO-protobuf shards.

What users otherwise hand-roll with the SDK's ``write_numpy_to_dense_tensor`` (whole matrix in
memory, nothing checked), done streaming and validated:

* features are cast to float32 (what every built-in reads; Linear Learner and FM accept
  nothing else), labels too; one feature_dim across all inputs; NaN/infinity (including
  float64 values too large for float32) rejected naming the file and, for CSV and text label
  files, the 1-based physical line (as training names CSV lines), for ``.npy`` / ``.npz`` the
  0-based row index;
* CSV is read in buffer-sized blocks, ``.npy`` is memory-mapped, ``.npz`` (scipy sparse,
  loaded without pickle) is written row block by row block;
* rows go to ``--shards N`` contiguous shards named and sized as the SDK's
  ``upload_numpy_to_s3_shards`` does (``matrix_<i>.pbr``, index zero-filled to the width of
  N, N-1 shards of ``rows // N`` and the rest in the last), so for float32 input the shard
  bytes equal the SDK's; ``--manifest S3_PREFIX`` writes the SDK's ``.amazon.manifest``
  (``[{"prefix": S3_PREFIX}, "matrix_0.pbr", ...]``) for an S3 ManifestFile channel.

Labels come from ``--labels FILE`` (``.npy``, or text with one number per line) or
``--label-column INDEX`` (a column of the features input, e.g. 0 for SageMaker's CSV
convention). Shards are written under temporary names and renamed when all succeeded; a
failed conversion leaves no shards behind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .csv import CsvDecoder
from .errors import DataError
from .minibatch import Minibatch, first_nonfinite_row
from .stream import decode_stream
from .writer import write_dense, write_sparse

CHUNK_ROWS = 1 << 14
MANIFEST = ".amazon.manifest"


@dataclass
class Block:
    """Rows ``first_row .. first_row + n`` of ``source`` (for error messages)."""

    features: np.ndarray | sp.csr_matrix
    labels: np.ndarray | None
    source: str
    first_row: int


@dataclass
class ConvertResult:
    rows: int
    feature_dim: int
    shards: list[Path]
    manifest: Path | None
    sparse: bool


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return suffix[1:]
    return "csv"


def count_rows(path: Path) -> int:
    """Rows of one input without decoding it (CSV: non-blank lines)."""
    kind = _kind(path)
    if kind == "npy":
        return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
    if kind == "npz":
        return _load_npz(path).shape[0]
    rows = 0
    with open(path, "rb") as stream:
        for line in stream:
            rows += bool(line.strip())
    return rows


def _load_npz(path: Path) -> sp.csr_matrix:
    try:
        return sp.load_npz(path).tocsr()  # never unpickles (allow_pickle=False inside)
    except (ValueError, KeyError, OSError) as exc:
        raise DataError(f"not a scipy sparse matrix saved with scipy.sparse.save_npz ({exc})", source=str(path),
                        fix="Save sparse features with scipy.sparse.save_npz, dense ones with numpy.save (.npy)") from None


def _dense_chunks(array: np.ndarray, source: str) -> Iterator[Block]:
    if array.ndim != 2:
        raise DataError(f"features must be a 2-D array (rows x features), found shape {array.shape}", source=source)
    if array.dtype.kind not in "fiub":
        raise DataError(f"features of dtype {array.dtype} are not numbers", source=source)
    for start in range(0, len(array), CHUNK_ROWS):
        yield Block(np.asarray(array[start : start + CHUNK_ROWS]), None, source, start)


def read_blocks(path: Path) -> Iterator[Block]:
    """Row blocks of one input file, features as stored (cast and checked later)."""
    source, kind = str(path), _kind(path)
    if kind == "npy":
        yield from _dense_chunks(np.load(path, mmap_mode="r", allow_pickle=False), source)
    elif kind == "npz":
        matrix = _load_npz(path)
        for start in range(0, matrix.shape[0], CHUNK_ROWS):
            yield Block(matrix[start : start + CHUNK_ROWS], None, source, start)
    else:
        row = 0
        with open(path, "rb") as stream:
            for batch in decode_stream(stream, CsvDecoder(source, label_size=0)):
                yield Block(batch.features, None, source, row)
                row += batch.size


def _take_label_column(block: Block, column: int) -> Block:
    dim = block.features.shape[1]
    if not -dim <= column < dim:
        raise DataError(f"--label-column {column} is outside the input's {dim} columns", source=block.source)
    column %= dim
    keep = np.arange(dim) != column
    labels = block.features[:, column]
    labels = np.asarray(labels.todense()).ravel() if sp.issparse(labels) else np.asarray(labels)
    return Block(block.features[:, keep], labels, block.source, block.first_row)


def read_labels(path: Path) -> np.ndarray:
    """A 1-D float32 label array from ``.npy`` (memory-mapped) or text with one number per
    line (read as CSV: errors name the line), non-finite values refused."""
    source = str(path)
    if path.suffix.lower() != ".npy":
        with open(path, "rb") as stream:
            blocks = [b.features for b in decode_stream(stream, CsvDecoder(source, label_size=0, feature_dim=1))]
        return np.concatenate(blocks)[:, 0] if blocks else np.zeros(0, np.float32)
    try:
        labels = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"labels cannot be read ({exc})", source=source,
                        fix="Give one number per line, or a 1-D .npy array") from None
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.dtype.kind not in "fiub":
        raise DataError(f"labels must be a 1-D array of numbers, found shape {labels.shape} of {labels.dtype}",
                        source=source)
    with np.errstate(over="ignore", invalid="ignore"):
        labels = labels.astype(np.float32)
    bad = first_nonfinite_row(labels)
    if bad is not None:
        raise DataError(f"row {bad} has a NaN or infinite label (or one too large for float32)", source=source,
                        fix="Remove or impute non-finite labels")
    return labels


def _checked(block: Block, feature_dim: int | None) -> Block:
    """Cast to float32 and reject what training would reject, naming the row.

    CSV blocks arrive checked by :class:`CsvDecoder` (errors naming the file's line); this
    checks ``.npy`` / ``.npz`` rows, named by their 0-based row index in the array."""
    with np.errstate(over="ignore", invalid="ignore"):
        features = block.features.astype(np.float32)
        labels = None if block.labels is None else np.asarray(block.labels).astype(np.float32)
    if feature_dim is not None and features.shape[1] != feature_dim:
        raise DataError(f"{features.shape[1]} features per row where earlier input has {feature_dim}",
                        source=block.source, fix="All inputs of one conversion need the same number of columns")
    bad = first_nonfinite_row(features)
    if bad is not None:
        raise DataError(f"row {block.first_row + bad} has NaN or infinity in its features (or a value too large "
                        "for float32)", source=block.source, fix="Remove or impute non-finite values")
    bad = None if labels is None else first_nonfinite_row(labels)
    if bad is not None:
        raise DataError(f"row {block.first_row + bad} has a NaN or infinite label (or one too large for float32)",
                        source=block.source, fix="Remove or impute non-finite labels")
    return Block(features, labels, block.source, block.first_row)


def shard_bounds(rows: int, shards: int) -> list[int]:
    """Row boundaries of ``shards`` contiguous shards, as the SDK's ``_build_shards`` cuts them."""
    if shards < 1:
        raise ValueError("--shards must be at least 1")
    size = rows // shards
    if size == 0:
        raise DataError(f"{rows} rows cannot fill {shards} shards", fix="Use fewer shards")
    return [i * size for i in range(shards)] + [rows]


def convert(
    inputs: list[Path],
    output: Path,
    shards: int = 1,
    labels: Path | None = None,
    label_column: int | None = None,
    manifest_prefix: str | None = None,
) -> ConvertResult:
    """Convert ``inputs`` (rows concatenated in order) into shards under ``output``."""
    if labels is not None and label_column is not None:
        raise ValueError("give --labels or --label-column, not both")
    kinds = {_kind(p) for p in inputs}
    if len(kinds) > 1:
        raise ValueError(f"inputs mix kinds {sorted(kinds)}; convert one kind at a time")
    rows = sum(count_rows(p) for p in inputs)
    label_array = None if labels is None else read_labels(labels)
    if label_array is not None and len(label_array) != rows:
        raise DataError(f"{len(label_array)} labels for {rows} rows of features", source=str(labels))
    bounds = shard_bounds(rows, shards)
    width = len(str(shards))
    names = [output / f"matrix_{str(i).zfill(width)}.pbr" for i in range(shards)]
    output.mkdir(parents=True, exist_ok=True)
    temporary = [p.with_name(f".{p.name}.partial") for p in names]
    try:
        feature_dim, sparse = _write_shards(inputs, temporary, bounds, label_array, label_column)
        for tmp, final in zip(temporary, names):
            os.replace(tmp, final)
    finally:
        for tmp in temporary:
            tmp.unlink(missing_ok=True)
    manifest = None
    if manifest_prefix is not None:
        prefix = manifest_prefix if manifest_prefix.endswith("/") else manifest_prefix + "/"
        manifest = output / MANIFEST
        manifest.write_text(json.dumps([{"prefix": prefix}] + [p.name for p in names]))
    return ConvertResult(rows, feature_dim, names, manifest, sparse)


def _write_shards(inputs, paths, bounds, label_array, label_column) -> tuple[int, bool]:
    feature_dim: int | None = None
    sparse = None
    shard, written = 0, 0
    out = open(paths[0], "wb")
    try:
        for path in inputs:
            for block in read_blocks(path):
                if label_column is not None:
                    block = _take_label_column(block, label_column)
                elif label_array is not None:
                    block.labels = label_array[written : written + block.features.shape[0]]
                block = _checked(block, feature_dim)
                feature_dim = block.features.shape[1]
                sparse = sp.issparse(block.features)
                start = 0
                while start < block.features.shape[0]:
                    if written == bounds[shard + 1]:
                        out.close()
                        shard += 1
                        out = open(paths[shard], "wb")
                    take = min(block.features.shape[0] - start, bounds[shard + 1] - written)
                    piece = Minibatch(block.features[start : start + take],
                                      None if block.labels is None else block.labels[start : start + take])
                    (write_sparse if sparse else write_dense)(out, piece.features, piece.labels)
                    start += take
                    written += take
    finally:
        out.close()
    if feature_dim is None:
        raise DataError("the inputs hold no rows", source=", ".join(map(str, inputs)))
    return feature_dim, bool(sparse)


def register(subparsers) -> None:
    """Add ``pipealgos convert`` to the CLI."""
    p = subparsers.add_parser(
        "convert",
        help="convert CSV / .npy / scipy-sparse .npz files into RecordIO-protobuf shards",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", type=Path, help="feature files, all of one kind (rows are concatenated)")
    p.add_argument("--output", "-o", type=Path, required=True, help="directory for matrix_<i>.pbr shards")
    p.add_argument("--shards", type=int, default=1, help="number of shards (default 1)")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--labels", type=Path, help="labels file: .npy or one number per line")
    labels.add_argument("--label-column", type=int, help="take labels from this column of the input (0 = first)")
    p.add_argument("--manifest", metavar="S3_PREFIX",
                   help="also write the SDK's .amazon.manifest, naming the S3 prefix the shards will be uploaded to")
    p.set_defaults(func=_run)


def _run(args) -> int:
    try:
        result = convert(args.inputs, args.output, args.shards, args.labels, args.label_column, args.manifest)
    except (DataError, ValueError, OSError) as exc:
        print(f"pipealgos convert: error: {exc}", file=sys.stderr)
        return 2
    kind = "sparse" if result.sparse else "dense"
    print(f"wrote {result.rows} {kind} rows of feature_dim {result.feature_dim} to {len(result.shards)} shard(s) "
          f"in {args.output}" + (f" and {result.manifest.name}" if result.manifest else ""))
    return 0
