"""MXNet NDArray files: the real SageMaker PCA artifact read, and what we write read back byte
for byte."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
from sagemaker_models import REAL_PCA_ARCHIVE

from pipealgos.io import DataError
from pipealgos.io.ndarray import read_ndarrays, write_ndarrays



def _real_pca_file() -> bytes:
    with tarfile.open(REAL_PCA_ARCHIVE) as tar:
        return tar.extractfile("model_algo-1").read()


def test_reads_the_real_sagemaker_pca_model_and_writes_the_same_bytes():
    data = _real_pca_file()
    arrays = read_ndarrays(data, "model_algo-1")
    assert list(arrays) == ["s", "v", "mean"]
    assert arrays["s"].shape == (25,) and arrays["v"].shape == (26, 25) and arrays["mean"].shape == (1, 26)
    assert all(a.dtype == np.float32 for a in arrays.values())
    # Ascending, as SageMaker's PCA stores them; its smallest is NaN in this real file (the square
    # root of a slightly negative eigenvalue), which is what a reader must be ready for.
    assert np.isnan(arrays["s"][0]) and np.all(np.diff(arrays["s"][1:]) >= 0)
    np.testing.assert_allclose(arrays["v"].T @ arrays["v"], np.eye(25), atol=1e-4)
    assert write_ndarrays(arrays) == data


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "uint8", "int32", "int8", "int64"])
def test_every_dtype_and_unnamed_lists_round_trip(dtype):
    arrays = [np.arange(6, dtype=dtype).reshape(2, 3), np.ones((4,), dtype=dtype), np.zeros((0, 2), dtype=dtype)]
    back = read_ndarrays(write_ndarrays(arrays))
    assert isinstance(back, list) and len(back) == 3
    for a, b in zip(arrays, back):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize("cut, message", [(10, "inside a header"), (40, "inside a header"), (100, "needs 100 bytes"),
                                          (-1, "runs past the end")])
def test_truncated_files_name_the_offset(cut, message):
    data = write_ndarrays({"s": np.ones(25, np.float32), "name": np.zeros(1, np.float32)})
    with pytest.raises(DataError, match=message) as info:
        read_ndarrays(data[:cut], "model_algo-1")
    assert "model_algo-1" in str(info.value) and "byte offset" in str(info.value)


def test_wrong_magic_and_sparse_storage_are_refused():
    good = write_ndarrays([np.ones(3, np.float32)])
    with pytest.raises(DataError, match="file magic"):
        read_ndarrays(b"\x00" * 8 + good[8:])
    sparse = good[:28] + (1).to_bytes(4, "little") + good[32:]
    with pytest.raises(DataError, match="storage type 1 is not dense"):
        read_ndarrays(sparse)
