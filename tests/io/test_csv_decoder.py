"""text/csv training data: label columns, errors naming file and line, lines across buffer edges."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pipealgos.io import ChannelSpec, DataError, iter_blocks
from pipealgos.io.csv import CsvDecoder
from pipealgos.io.minibatch import concat
from pipealgos.io.stream import decode_stream


def decode(text: str, label_size: int, buffer_size: int = 1 << 16, feature_dim=None):
    decoder = CsvDecoder("data.csv", label_size, feature_dim)
    return concat(list(decode_stream(io.BytesIO(text.encode()), decoder, buffer_size)))


def table(rows: int = 200, cols: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols)).round(4)


def to_csv(values: np.ndarray) -> str:
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in values)


def test_label_size_0_is_all_features():
    values = table()
    batch = decode(to_csv(values), 0)
    assert batch.labels is None
    assert batch.features.dtype == np.float32
    assert np.array_equal(batch.features, values.astype(np.float32))


def test_label_size_1_takes_the_first_column():
    values = table()
    batch = decode(to_csv(values), 1)
    assert np.array_equal(batch.labels, values[:, 0].astype(np.float32))
    assert np.array_equal(batch.features, values[:, 1:].astype(np.float32))


@pytest.mark.parametrize("buffer_size", [7, 33, 64, 1000])
def test_lines_split_across_buffer_boundaries(buffer_size):
    values = table(rows=60)
    text = to_csv(values)
    batch = decode(text, 1, buffer_size)
    assert np.array_equal(batch.labels, values[:, 0].astype(np.float32))
    assert np.array_equal(batch.features, values[:, 1:].astype(np.float32))


def test_last_line_without_newline_and_crlf():
    batch = decode("1,2,3\r\n4,5,6", 0, buffer_size=8)
    assert np.array_equal(batch.features, [[1, 2, 3], [4, 5, 6]])


def error(text: str, label_size: int = 0, buffer_size: int = 1 << 16, feature_dim=None) -> DataError:
    with pytest.raises(DataError) as caught:
        decode(text, label_size, buffer_size, feature_dim)
    assert caught.value.source == "data.csv"
    return caught.value


@pytest.mark.parametrize("buffer_size", [16, 1 << 16])
def test_ragged_row_names_its_line(buffer_size):
    exc = error("1,2,3\n4,5,6\n7,8\n9,10,11\n", buffer_size=buffer_size)
    assert "line 3" in str(exc)
    assert "columns" in str(exc)


@pytest.mark.parametrize("buffer_size", [16, 1 << 16])
def test_non_numeric_field_names_its_line_and_value(buffer_size):
    exc = error("1,2,3\n4,5,6\n7,abc,9\n", buffer_size=buffer_size)
    assert "line 3" in str(exc) and "'abc'" in str(exc)
    assert "header" in str(exc)  # the fix mentions the usual cause


def test_header_row_is_reported_as_line_1():
    exc = error("a,b,c\n1,2,3\n")
    assert "line 1" in str(exc) and "'a'" in str(exc)


def test_nan_and_infinity_name_their_line():
    assert "line 2" in str(error("1,2\nnan,3\n"))
    assert "line 3" in str(error("1,2\n3,4\n5,inf\n"))


def test_feature_dim_mismatch_is_named():
    exc = error("1,2,3\n", label_size=1, feature_dim=5)
    assert "expected feature_dim 5" in str(exc) and "6 columns" in str(exc)


def test_unsupported_label_size():
    with pytest.raises(DataError, match="label_size=2"):
        CsvDecoder("data.csv", 2)


def test_label_size_from_the_content_type_and_the_channel_default(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "part.csv").write_text("1,2,3\n0,5,6\n")
    labelled = concat(list(iter_blocks(ChannelSpec("train", tmp_path, content_type="text/csv;label_size=1"), 0)))
    assert np.array_equal(labelled.labels, [1, 0]) and labelled.feature_dim == 2
    default = concat(list(iter_blocks(ChannelSpec("train", tmp_path, content_type="text/csv"), 0)))
    assert default.labels is None and default.feature_dim == 3
    supervised = ChannelSpec("train", tmp_path, content_type="text/csv", default_label_size=1)
    assert concat(list(iter_blocks(supervised, 0))).labels is not None


def test_csv_error_in_a_channel_names_channel_file_and_line(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "a.csv").write_text("1,2\n3,4\n")
    (folder / "b.csv").write_text("1,2\n3,x\n")
    with pytest.raises(DataError) as caught:
        list(iter_blocks(ChannelSpec("train", tmp_path, content_type="text/csv"), 0))
    message = str(caught.value)
    assert "channel 'train'" in message and str(folder / "b.csv") in message and "line 2" in message


# --- float32 range and line numbering (issue 12, item 1) ---------------------------------------

@pytest.mark.parametrize("text, label_size, line, what", [
    ("1,2,3\n4,1e40,6\n", 0, 2, "NaN or infinity"),  # finite as float64, inf as float32
    ("1,2,3\n4,5,-3.5e38\n", 0, 2, "NaN or infinity"),
    ("1,2,3\n1e39,5,6\n", 1, 2, "NaN or infinite label"),
])
def test_values_beyond_float32_are_refused_after_the_cast(text, label_size, line, what):
    exc = error(text, label_size=label_size)
    assert f"line {line}: {what}" in str(exc) and "float32" in str(exc)


def test_largest_float32_passes():
    batch = decode("3.4028234e38,-3.4028234e38\n", 0)
    assert np.isfinite(batch.features).all()


@pytest.mark.parametrize("buffer_size", [8, 1 << 16])
def test_lines_are_physical_lines_blank_ones_included(buffer_size):
    """Blank and whitespace-only lines are skipped but still counted, as an editor counts."""
    text = "1,2\n\n   \n3,4\n\t\n5,nan\n"
    assert "line 6:" in str(error(text, buffer_size=buffer_size))
    batch = decode("1,2\n\n   \n3,4\n", 0, buffer_size)
    assert np.array_equal(batch.features, [[1, 2], [3, 4]])


@pytest.mark.parametrize("text, line, shown", [
    ("1,2\n3,4#5\n", 2, "'4#5'"),  # '#' is data, not a comment
    ("1,2\n1_0,2\n", 2, "'1_0'"),  # Python's float() takes it; CSV numbers do not
    ("1,2\n3,,4\n", 2, "''"),
    ("1,2\n3,4\r5,6\n", 2, "'4\\r5'"),  # a lone CR is not a line break
    ("1,2\n\x00\n", 2, "'\\x00'"),
])
def test_every_unreadable_line_is_a_data_error_naming_it(text, line, shown):
    exc = error(text)
    assert f"line {line}: non-numeric field {shown}" in str(exc)


def test_ragged_line_after_blank_lines_names_its_physical_line():
    exc = error("1,2\n\n3\n")
    assert "line 3: 1 columns where earlier lines have 2" in str(exc)


def test_training_on_csv_beyond_float32_fails_as_a_client_error_naming_file_and_line(tmp_path):
    """The issue's case: one 1e40 in a k-means CSV channel once trained a NaN model, exit 0."""
    from mlroot import make_ml_root

    from pipealgos.platform.config import MLRoot
    from pipealgos.platform.train import EXIT_CLIENT_ERROR, run_training

    root = make_ml_root(tmp_path, {"feature_dim": 2, "k": 2, "mini_batch_size": 4},
                        {"train": {"TrainingInputMode": "File", "ContentType": "text/csv"}})
    folder = root / "input" / "data" / "train"
    folder.mkdir()
    (folder / "part.csv").write_text("".join(f"{i},{i % 3}\n" for i in range(20)) + "\n1e40,1\n")
    assert run_training(MLRoot(root), "kmeans") == EXIT_CLIENT_ERROR
    failure = (root / "output" / "failure").read_text()
    assert str(folder / "part.csv") in failure and "line 22: NaN or infinity" in failure
    assert not list((root / "model").iterdir())
