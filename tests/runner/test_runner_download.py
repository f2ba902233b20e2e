"""File-mode downloads: whatever an object key holds, nothing lands outside the channel's folder."""

import pytest

from pipealgos.platform.runner.download import DownloadCounter, download_objects
from pipealgos.platform.runner.feeder import FeedOptions
from pipealgos.platform.runner.storage import LocalStore, StorageError, StoredObject


@pytest.mark.parametrize("relative", ["../config/hyperparameters.json", "a/../../../x", "/etc/passwd-copy", "."])
def test_a_key_pointing_outside_the_channel_folder_is_refused(tmp_path, relative):
    source = tmp_path / "object"
    source.write_bytes(b"payload")
    channel = tmp_path / "input" / "data" / "train"
    (tmp_path / "input" / "config").mkdir(parents=True)
    with pytest.raises(StorageError, match="would land outside"):
        download_objects(LocalStore(), [StoredObject(str(source), 7, relative)], channel, FeedOptions(),
                         DownloadCounter())
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [source]


def test_keys_with_dots_inside_the_folder_are_kept(tmp_path):
    source = tmp_path / "object"
    source.write_bytes(b"payload")
    channel = tmp_path / "train"
    download_objects(LocalStore(), [StoredObject(str(source), 7, "sub/../part..1")], channel, FeedOptions(),
                     DownloadCounter())
    assert (channel / "part..1").read_bytes() == b"payload"
