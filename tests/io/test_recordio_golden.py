"""Golden files: ml-io's own (whole, split, corrupt-split, int32) and ours (dmlc splits, each corruption)."""

from __future__ import annotations

import io
import runpy
from pathlib import Path

import numpy as np
import pytest

from pipealgos.io import ChannelSpec, DataError, iter_blocks
from pipealgos.io.minibatch import concat
from pipealgos.io.protobuf import RecordDecoder, _is_record
from pipealgos.io.recordio import iter_records
from pipealgos.io.stream import decode_stream

DATA = Path(__file__).parents[1] / "data" / "recordio"
MLIO = DATA / "ml-io"
ML_IO_RECORDS = (
    np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 2, 0], [0, 0, 0]], dtype=np.float32),
    np.array([1, 2, 3, 4, 5], dtype=np.float32),
)
MAGIC_FLOAT = np.frombuffer(b"\x0a\x23\xd7\xce", dtype="<f4")[0]


def read(path: Path, buffer_size: int = 1 << 16):
    """(blocks decoded before any error, the error or None)."""
    blocks = []
    try:
        with open(path, "rb") as stream:
            blocks.extend(decode_stream(stream, RecordDecoder(path.name), buffer_size))
    except DataError as exc:
        return blocks, exc
    return blocks, None


@pytest.mark.parametrize("buffer_size", [16, 100, 1 << 16])
@pytest.mark.parametrize("name", ["complete_records.pr", "split_records.pr"])
def test_mlio_whole_and_split_records(name, buffer_size):
    blocks, error = read(MLIO / name, buffer_size)
    assert error is None
    batch = concat(blocks)
    assert np.array_equal(batch.features, ML_IO_RECORDS[0])
    assert np.array_equal(batch.labels, ML_IO_RECORDS[1])


def test_mlio_split_file_has_the_frames_its_readme_lists():
    data = (MLIO / "split_records.pr").read_bytes()
    assert len(data) == 440
    flags, offset = [], 0
    while offset < len(data):
        lrec = int.from_bytes(data[offset + 4 : offset + 8], "little")
        flags.append(lrec >> 29)
        offset += 8 + ((lrec & ((1 << 29) - 1)) + 3) // 4 * 4
    assert flags == [1, 2, 2, 3] * 5


def test_mlio_corrupt_split_gives_three_records_then_names_frame_13():
    blocks, error = read(MLIO / "corrupted_split_records.pr")
    batch = concat(blocks)
    assert np.array_equal(batch.features, ML_IO_RECORDS[0][:3])
    assert np.array_equal(batch.labels, ML_IO_RECORDS[1][:3])
    assert error is not None
    message = str(error)
    assert "corrupt split record" in message and "frame #13" in message
    assert "corrupted_split_records.pr" in message and "record 3" in message


def test_mlio_int32_records_are_cast():
    blocks, error = read(MLIO / "int32_records.pbr")
    assert error is None
    batch = concat(blocks)
    assert batch.features.dtype == np.float32
    assert np.array_equal(batch.features, [[0, 0, 0], [0, 0, 0], [1, 1, 1]])
    assert np.array_equal(batch.labels, [1, 1, 0])


def test_dmlc_split_records_rejoin_with_the_magic():
    blocks, error = read(DATA / "dmlc_split.pbr")
    assert error is None
    batch = concat(blocks)
    m = MAGIC_FLOAT
    expected = np.array([[1, 2, 3, 4], [1, m, 3, 4], [m, 2, m, 4], [5, 6, 7, 8]], dtype=np.float32)
    assert np.array_equal(batch.features, expected)
    assert np.array_equal(batch.labels, [0, 1, 0, 1])


def test_simple_frame_reader_joins_both_conventions():
    """iter_records (tools' reader) gives the same payloads for ml-io splits as for whole frames."""
    whole = list(iter_records(io.BytesIO((MLIO / "complete_records.pr").read_bytes())))
    split = list(iter_records(io.BytesIO((MLIO / "split_records.pr").read_bytes()), judge=_is_record))
    assert split == whole


CORRUPT = {
    "wrong_magic.pbr": ("expected magic 0xCED7230A, found 0xDEADBEEF", 120, 2),
    "truncated_header.pbr": ("truncated frame header: 6 of 8 bytes", 120, 2),
    "truncated_payload.pbr": ("truncated record: header announces 52 payload bytes, only 12 remain", 120, 2),
    "length_past_eof.pbr": ("header announces 1000 payload bytes", 120, 2),
    "not_a_record.pbr": ("not an aialgs.data.Record", 120, 2),
    "no_values.pbr": ("no 'values' feature (feature keys: ['pixels'])", 120, 2),
    "sparse_key_out_of_range.pbr": ("sparse key 4 is out of range for shape [4]", 116, 2),
    "nan.pbr": ("NaN or infinity in features", None, 2),
    "inf.pbr": ("NaN or infinity in features", None, 2),
}


@pytest.mark.parametrize("buffer_size", [16, 1 << 16])
@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_each_corruption_is_reported_where_it_is(name, buffer_size):
    problem, offset, record = CORRUPT[name]
    blocks, error = read(DATA / name, buffer_size)
    assert error is not None, "corrupt file read without error"
    assert problem in error.problem
    assert error.source == name and error.record == record and error.offset == offset
    assert f"record {record}" in str(error)
    if offset is not None:
        # Structural errors leave the records before them readable.
        good = concat(blocks)
        assert good.size == 2
        assert np.array_equal(good.dense(), [[1, 2, 3, 4], [5, 6, 7, 8]] if name != "sparse_key_out_of_range.pbr"
                              else [[1, 0, 2, 0], [0, 3, 0, 0]])


def test_errors_name_the_channel_and_file_in_file_mode(tmp_path):
    channel = tmp_path / "train"
    channel.mkdir()
    (channel / "a.pbr").write_bytes((DATA / "dmlc_split.pbr").read_bytes())
    (channel / "b.pbr").write_bytes((DATA / "wrong_magic.pbr").read_bytes())
    with pytest.raises(DataError) as caught:
        for _ in iter_blocks(ChannelSpec("train", tmp_path), epoch=0):
            pass
    message = str(caught.value)
    assert message.startswith("channel 'train', ")
    assert str(channel / "b.pbr") in message and "byte offset 120" in message and "0xDEADBEEF" in message
    assert "pipealgos convert" in message  # says what to do


def test_our_golden_files_are_reproducible():
    built = runpy.run_path(str(DATA / "make_golden.py"), run_name="golden")["build"]()
    assert set(built) == set(CORRUPT) | {"dmlc_split.pbr"}
    for name, data in built.items():
        assert (DATA / name).read_bytes() == data, name


@pytest.mark.parametrize("fast_paths", [True, False])
def test_nan_record_before_a_corrupt_one_is_reported_first(fast_paths):
    """The rows before a bad record are checked and returned first: a NaN in record 1 is the
    error (naming record 1), though record 2 is corrupt and in the same buffer."""
    from pipealgos.io import write_dense

    out = io.BytesIO()
    write_dense(out, np.array([[1.0, 2.0], [np.nan, 3.0], [4.0, 5.0]], dtype=np.float32))
    data = bytearray(out.getvalue())
    third = 2 * (len(data) // 3)
    data[third + 8] = 0xFF  # record 2's payload no longer parses as a Record
    decoder = RecordDecoder("test", fast_paths=fast_paths)
    with pytest.raises(DataError) as caught:
        list(decode_stream(io.BytesIO(bytes(data)), decoder, 1 << 16))
    assert caught.value.problem == "NaN or infinity in features"
    assert caught.value.record == 1
