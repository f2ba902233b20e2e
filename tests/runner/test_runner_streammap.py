"""Pipe-mode errors name the object: the feeder's map of each FIFO, checked against the bytes a
real FIFO carried, and failure reasons rewritten with the object and the place within it."""

from pathlib import Path

import pytest

from pipealgos.io.recordio import HEADER
from pipealgos.platform.runner.feeder import FeedOptions
from pipealgos.platform.runner.storage import StoredObject
from pipealgos.platform.runner.streammap import StreamMap, name_objects
from test_runner_feeder import read_fifo, start_feeder


def csv_objects(folder: Path, line_counts: list[int]) -> list[StoredObject]:
    folder.mkdir()
    objects = []
    for i, count in enumerate(line_counts):
        path = folder / f"part-{i}.csv"
        path.write_text("".join(f"{i},{n}\n" for n in range(count)))
        objects.append(StoredObject(str(path), path.stat().st_size, path.name))
    return objects


@pytest.mark.parametrize("wrap", [False, True])
def test_every_byte_and_line_of_a_fifo_maps_back_to_its_object(tmp_path, wrap):
    objects = csv_objects(tmp_path / "src", [3, 0, 40, 7])
    feeder, data_dir, _ = start_feeder(tmp_path, objects, wrap=wrap,
                                       options=FeedOptions(workers=2, chunk_size=50, memory_cap=200))
    try:
        stream = read_fifo(data_dir / "train_0")
    finally:
        feeder.stop()
        feeder.join(5)
    fifo_map = feeder.stream_map(0)
    assert [o.uri for o in fifo_map.objects] == [o.uri for o in objects]
    for offset in range(len(stream)):
        obj, within = fifo_map.at_offset(offset)
        content = Path(obj.uri).read_bytes()
        if wrap and offset < obj.start + HEADER.size:
            assert within == 0  # in the object's record header: its first byte
        elif within < len(content):
            assert content[within] == stream[offset]
        else:
            assert wrap  # only the padding after a wrapped object lies beyond its content
    if not wrap:
        for line_number, line in enumerate(stream.decode().splitlines(), start=1):
            obj, within = fifo_map.at_line(line_number)
            assert Path(obj.uri).read_text().splitlines()[within - 1] == line
    assert fifo_map.at_offset(len(stream)) is None


def test_a_reason_naming_a_fifo_gets_the_object_and_the_place_in_it():
    fifo_map = StreamMap()
    fifo_map.add("s3://b/a.csv", True, 0, 100, 10)
    fifo_map.add("s3://b/b.csv", True, 0, 60, 4)
    fifo_map.add("s3://b/b.csv", False, 0, 40, 2)
    maps = {("train", 0): fifo_map}.get
    fifo = "/tmp/w/j/algo-1/input/data/train_0"

    def named(reason: str) -> str:
        return name_objects(reason, lambda channel, epoch: maps((channel, epoch)))

    assert named(f"ClientError: {fifo}: line 12: non-numeric field 'x'") == \
        f"ClientError: {fifo} (s3://b/b.csv, line 2 of that object): line 12: non-numeric field 'x'"
    assert named(f"ClientError: channel 'train', {fifo}, record 9, byte offset 150: truncated") == \
        f"ClientError: channel 'train', {fifo} (s3://b/b.csv, byte offset 50 of that object), record 9, " \
        "byte offset 150: truncated"
    for unchanged in (f"{fifo}, byte offset 999: beyond what was written", "no FIFO here, line 3",
                      f"{fifo[:-1]}1, line 3: another epoch", f"{fifo}: no place given"):
        assert named(unchanged) == unchanged
