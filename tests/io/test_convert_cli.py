"""``pipealgos convert`` through the real CLI, read back with our decoder and checked against the SDK."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from pipealgos.io import ChannelSpec, iter_blocks
from pipealgos.io.minibatch import concat

PIPEALGOS = str(Path(sys.executable).parent / "pipealgos")
RNG = np.random.default_rng(11)


def run_convert(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PIPEALGOS, "convert", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


def read_back(folder: Path):
    """Everything under ``folder`` as one File-mode channel (shards in sorted order)."""
    return concat(list(iter_blocks(ChannelSpec(folder.name, folder.parent), epoch=0)))


def shard_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_npy_with_labels_file_into_shards_with_manifest(tmp_path):
    x = RNG.standard_normal((1001, 6))  # float64: cast to float32
    y = RNG.integers(0, 2, 1001)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    done = run_convert("x.npy", "--labels", "y.npy", "--shards", 3, "--output", "out", "--manifest",
                       "s3://bucket/data/train", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1001 dense rows of feature_dim 6 to 3 shard(s)" in done.stdout
    out = tmp_path / "out"
    assert shard_names(out) == ["matrix_0.pbr", "matrix_1.pbr", "matrix_2.pbr"]
    manifest = json.loads((out / ".amazon.manifest").read_text())
    assert manifest == [{"prefix": "s3://bucket/data/train/"}, "matrix_0.pbr", "matrix_1.pbr", "matrix_2.pbr"]
    batch = read_back(out)
    assert np.array_equal(batch.features, x.astype(np.float32))
    assert np.array_equal(batch.labels, y.astype(np.float32))
    assert [p.stat().st_size for p in sorted(out.glob("*.pbr"))][:2] == [(out / "matrix_0.pbr").stat().st_size] * 2


def test_shards_are_byte_identical_to_the_sdk_helpers(tmp_path):
    """Same split, names and bytes as upload_numpy_to_s3_shards(..., x.astype(float32), y.astype(float32))."""
    from sagemaker.amazon import common
    from sagemaker.amazon.amazon_estimator import _build_shards

    x = RNG.standard_normal((103, 4)).astype(np.float32)
    y = RNG.integers(0, 5, 103).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    done = run_convert("x.npy", "--labels", "y.npy", "--shards", 11, "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    names = shard_names(tmp_path / "out")
    assert names[:3] == ["matrix_00.pbr", "matrix_01.pbr", "matrix_02.pbr"] and len(names) == 11
    for name, xs, ys in zip(names, _build_shards(11, x), _build_shards(11, y)):
        expected = io.BytesIO()
        common.write_numpy_to_dense_tensor(expected, xs, ys)
        assert (tmp_path / "out" / name).read_bytes() == expected.getvalue(), name


def test_manifest_equals_the_one_the_sdk_uploads(tmp_path):
    """The SDK's upload_numpy_to_s3_shards against a real S3-compatible server on loopback."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "runner"))
    import seaweed
    from sagemaker.amazon.amazon_estimator import upload_numpy_to_s3_shards

    x = RNG.standard_normal((50, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    server = seaweed.SeaweedServer(tmp_path / "weed")
    try:
        uri = upload_numpy_to_s3_shards(4, server.resource(), seaweed.BUCKET, "pca/train", x)
        client = server.client()
        theirs = {o["Key"]: client.get_object(Bucket=seaweed.BUCKET, Key=o["Key"])["Body"].read()
                  for o in client.list_objects_v2(Bucket=seaweed.BUCKET, Prefix="pca/train/")["Contents"]}
    finally:
        server.stop()
    assert uri == f"s3://{seaweed.BUCKET}/pca/train/.amazon.manifest"
    done = run_convert("x.npy", "--shards", 4, "-o", "out", "--manifest", f"s3://{seaweed.BUCKET}/pca/train",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ours = {f"pca/train/{p.name}": p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert ours == theirs


def test_csv_with_label_column_streams_and_reads_back(tmp_path):
    x = RNG.standard_normal((2500, 5)).round(3)
    y = RNG.integers(0, 3, 2500)
    lines = [",".join([str(int(label)), *(str(float(v)) for v in row)]) for label, row in zip(y, x)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    done = run_convert("train.csv", "--label-column", 0, "--shards", 2, "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    batch = read_back(tmp_path / "out")
    assert np.array_equal(batch.features, x.astype(np.float32))
    assert np.array_equal(batch.labels, y.astype(np.float32))
    assert (tmp_path / "out" / "matrix_0.pbr").stat().st_size == pytest.approx(
        (tmp_path / "out" / "matrix_1.pbr").stat().st_size, rel=0.01)


def test_several_csv_parts_and_last_label_column(tmp_path):
    (tmp_path / "a.csv").write_text("1,2,0\n3,4,1\n")
    (tmp_path / "b.csv").write_text("5,6,1\n")
    done = run_convert("a.csv", "b.csv", "--label-column", -1, "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    batch = read_back(tmp_path / "out")
    assert np.array_equal(batch.features, [[1, 2], [3, 4], [5, 6]])
    assert np.array_equal(batch.labels, [0, 1, 1])


def test_sparse_npz_keeps_sparsity(tmp_path):
    x = sp.random(300, 5000, density=0.003, format="csr", random_state=4)
    sp.save_npz(tmp_path / "x.npz", x)
    (tmp_path / "y.txt").write_text("\n".join(str(v) for v in range(300)) + "\n")
    done = run_convert("x.npz", "--labels", "y.txt", "--shards", 2, "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "300 sparse rows of feature_dim 5000" in done.stdout
    batch = read_back(tmp_path / "out")
    assert batch.is_sparse
    assert (batch.features != x.astype(np.float32)).nnz == 0
    assert np.array_equal(batch.labels, np.arange(300, dtype=np.float32))


@pytest.fixture
def failed(tmp_path, capsys, monkeypatch):
    """Run a conversion that must fail; returns its message. In-process through the same
    argparse CLI as the console script (each subprocess pays the CLI's full import time)."""
    from pipealgos.cli import main

    monkeypatch.chdir(tmp_path)

    def run(_tmp_path: Path, *args) -> str:
        assert main(["convert", *map(str, args), "-o", "out"]) == 2
        out = tmp_path / "out"
        assert not out.exists() or not list(out.iterdir()), "a failed conversion left files"
        message = capsys.readouterr().err
        assert message.startswith("pipealgos convert: error: ")
        return message

    return run


def test_nan_and_float32_overflow_are_rejected_naming_the_row(tmp_path, failed):
    x = np.ones((40_000, 3))
    x[33_000, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    assert "row 33000 has NaN or infinity" in failed(tmp_path, "nan.npy", "--shards", 2)
    x[33_000, 1] = 1e300  # finite in float64, infinite in float32
    np.save(tmp_path / "big.npy", x)
    message = failed(tmp_path, "big.npy")
    assert "row 33000" in message and "too large for float32" in message and "big.npy" in message


def test_csv_errors_name_file_and_line(tmp_path, failed):
    (tmp_path / "bad.csv").write_text("1,2,3\n4,5\n")
    message = failed(tmp_path, "bad.csv")
    assert "bad.csv" in message and "line 2" in message
    (tmp_path / "nan.csv").write_text("1,2\n3,nan\n")
    assert "line 2: NaN or infinity" in failed(tmp_path, "nan.csv")


def test_label_problems(tmp_path, failed):
    np.save(tmp_path / "x.npy", np.ones((10, 2)))
    np.save(tmp_path / "short.npy", np.ones(9))
    assert "9 labels for 10 rows" in failed(tmp_path, "x.npy", "--labels", "short.npy")
    labels = np.ones(10)
    labels[4] = np.inf
    np.save(tmp_path / "inf.npy", labels)
    assert "row 4 has a NaN or infinite label" in failed(tmp_path, "x.npy", "--labels", "inf.npy")
    assert "--label-column 7" in failed(tmp_path, "x.npy", "--label-column", 7)


def test_mismatched_widths_and_too_many_shards(tmp_path, failed):
    np.save(tmp_path / "a.npy", np.ones((4, 2)))
    np.save(tmp_path / "b.npy", np.ones((4, 3)))
    assert "3 features per row where earlier input has 2" in failed(tmp_path, "a.npy", "b.npy")
    assert "4 rows cannot fill 5 shards" in failed(tmp_path, "a.npy", "--shards", 5)


def test_npz_that_is_not_scipy_sparse_is_refused_without_unpickling(tmp_path, failed):
    np.savez(tmp_path / "plain.npz", features=np.ones((3, 3)))
    assert "not a scipy sparse matrix" in failed(tmp_path, "plain.npz")


def test_csv_lines_are_named_as_training_names_them(tmp_path, failed):
    """Physical 1-based lines, as the CSV training reader says (it once said "row 1" for line 2)."""
    (tmp_path / "big.csv").write_text("1,2\n3,1e40\n")
    message = failed(tmp_path, "big.csv")
    assert "big.csv" in message and "line 2: NaN or infinity" in message and "float32" in message
    (tmp_path / "gap.csv").write_text("1,2\n\n3,nan\n")
    assert "line 3: NaN or infinity" in failed(tmp_path, "gap.csv")


def test_text_labels_file_errors_name_its_line(tmp_path, failed):
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    (tmp_path / "y.txt").write_text("1\n0\n1e40\n")
    message = failed(tmp_path, "x.npy", "--labels", "y.txt")
    assert "y.txt" in message and "line 3: NaN or infinity" in message


def test_label_column_beyond_float32_is_refused(tmp_path, failed):
    x = np.ones((5, 3))
    x[2, 0] = 1e300
    np.save(tmp_path / "x.npy", x)
    assert "row 2 has a NaN or infinite label" in failed(tmp_path, "x.npy", "--label-column", 0)
