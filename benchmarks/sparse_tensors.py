"""Sparse minibatches into torch without densifying: decode time vs decode + conversion.

A stream of 1,000,000-feature records with ~50 non-zeros each (RecordIO-protobuf, in memory)
is decoded by the IO layer into 1,000-row CSR minibatches (the baseline), then decoded and
turned into what sparse algorithms consume: a torch sparse CSR tensor (``to_torch`` with
``keep_sparse``) and the (indices, offsets, per-sample weights) triple of ``embedding_bag``,
with one ``embedding_bag`` product against a 1,000,000 x 16 table as a use check. Goal:
decode + conversion <= 2x decode alone. Densifying one such minibatch would take 4 GB.

    python benchmarks/sparse_tensors.py [--rows 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch
from _results import machine, record_section

from pipealgos.algorithms.tensors import embedding_bag_inputs, to_torch
from pipealgos.io import rebatch, write_sparse
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.stream import decode_buffer

FEATURES = 1_000_000
NONZEROS = 50
BATCH = 1000
GOAL = 2.0


def make_stream(rows: int) -> bytes:
    rng = np.random.default_rng(0)
    indptr = np.arange(rows + 1, dtype=np.int64) * NONZEROS
    indices = np.sort(rng.integers(0, FEATURES, size=(rows, NONZEROS)), axis=1).ravel()
    x = sp.csr_matrix((rng.random(rows * NONZEROS, dtype=np.float32), indices, indptr), shape=(rows, FEATURES))
    x.sum_duplicates()
    out = io.BytesIO()
    write_sparse(out, x)
    return out.getvalue()


def minibatches(data: bytes):
    return rebatch(decode_buffer(data, RecordDecoder("benchmark", FEATURES)), BATCH)


def decode_only(data: bytes) -> float:
    started = time.perf_counter()
    for _ in minibatches(data):
        pass
    return time.perf_counter() - started


def decode_and_convert(data: bytes, table: torch.Tensor) -> float:
    device = torch.device("cpu")
    started = time.perf_counter()
    for batch in minibatches(data):
        to_torch(batch.features, device, keep_sparse=True)
        indices, offsets, weights = embedding_bag_inputs(batch.features, device)
        torch.nn.functional.embedding_bag(indices, table, offsets, mode="sum", per_sample_weights=weights)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    data = make_stream(args.rows)
    table = torch.randn(FEATURES, 16)
    decode = min(decode_only(data) for _ in range(args.repeats))
    convert = min(decode_and_convert(data, table) for _ in range(args.repeats))
    ratio = convert / decode
    met = ratio <= GOAL
    text = (f"{args.rows:,} records of {FEATURES:,} features, ~{NONZEROS} non-zeros each "
            f"({len(data) / 1e6:.0f} MB), {BATCH}-row minibatches, best of {args.repeats}; {machine()}\n\n"
            f"| step | seconds | records/s |\n|---|---:|---:|\n"
            f"| decode to CSR | {decode:.3f} | {args.rows / decode:,.0f} |\n"
            f"| decode + torch sparse CSR + embedding_bag triple + one embedding_bag | {convert:.3f} | "
            f"{args.rows / convert:,.0f} |\n\n"
            f"ratio {ratio:.2f}x decode alone (goal <= {GOAL}x: {'met' if met else 'MISSED'})")
    print(text)
    record_section("sparse_tensors", text, "## Sparse minibatches to torch (benchmarks/sparse_tensors.py)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
