"""Channel faults that are the user's to fix (issue 12, items 16, 18 and 22): each one a
DataError naming the channel, the file or FIFO and the fix; none blocks forever."""

from __future__ import annotations

import gzip
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from mlroot import recordio_bytes

from pipealgos.io import ChannelSpec, DataError, iter_blocks
from pipealgos.io.channel import (DEFAULT_STALL_TIMEOUT, STALL_TIMEOUT_ENV, FifoReader, open_fifo,
                                  timeout_from_env)

ROWS = np.arange(3000, dtype=np.float32).reshape(1000, 3)


def read_within(spec: ChannelSpec, seconds: float = 20) -> list:
    """Read one pass on a thread: a reader that blocks fails the test instead of hanging it."""
    outcome: dict = {}

    def run():
        try:
            outcome["blocks"] = list(iter_blocks(spec, 0))
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"reading the channel blocked for {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["blocks"]


def channel_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "a.pbr").write_bytes(recordio_bytes(ROWS[:10]))
    return folder


# --- CSV label_size (item 16) -------------------------------------------------------------------

@pytest.mark.parametrize("label_size", ["abc", "-1", "2", "", "1.0"])
def test_bad_label_size_is_refused_before_reading(tmp_path, label_size):
    spec = ChannelSpec("train", tmp_path, content_type=f"text/csv;label_size={label_size}")
    with pytest.raises(DataError) as caught:
        spec.check_readable()  # no channel folder needed: nothing is read
    message = str(caught.value)
    assert "channel 'train'" in message and f"label_size={label_size!r}" in message
    assert "label_size=0" in message and "label_size=1" in message  # the fix


def test_content_type_that_is_not_a_string_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="ContentType 5 is not a string"):
        ChannelSpec("train", tmp_path, content_type=5).check_readable()


# --- what a File-mode channel folder may hold (items 16 and 18) ------------------------------------

def test_broken_symlink_is_named(tmp_path):
    folder = channel_folder(tmp_path)
    (folder / "b.pbr").symlink_to(tmp_path / "gone.pbr")
    with pytest.raises(DataError) as caught:
        read_within(ChannelSpec("train", tmp_path))
    message = str(caught.value)
    assert "channel 'train'" in message and str(folder / "b.pbr") in message and "gone.pbr" in message
    assert "does not exist" in message


def test_symlink_to_a_regular_file_is_read(tmp_path):
    folder = channel_folder(tmp_path)
    (tmp_path / "elsewhere.pbr").write_bytes(recordio_bytes(ROWS[10:20]))
    (folder / "b.pbr").symlink_to(tmp_path / "elsewhere.pbr")
    blocks = read_within(ChannelSpec("train", tmp_path))
    assert np.array_equal(np.vstack([b.features for b in blocks]), ROWS[:20])


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_file_mode_refuses_what_is_not_a_regular_file_by_name(tmp_path, kind):
    folder = channel_folder(tmp_path)
    odd = folder / "sub" / "odd"
    odd.parent.mkdir()
    if kind == "fifo":
        os.mkfifo(odd)  # once: blocked forever on open
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(odd))
    else:
        odd.symlink_to("/dev/null")
    with pytest.raises(DataError) as caught:
        read_within(ChannelSpec("train", tmp_path))
    message = str(caught.value)
    expected = {"fifo": "a FIFO (named pipe)", "socket": "a socket", "device": "a character device"}[kind]
    assert "channel 'train'" in message and f"{odd} is {expected}, not a regular file" in message
    assert "Pipe mode" in message  # the fix


def test_unreadable_file_is_a_data_error(tmp_path):
    folder = channel_folder(tmp_path)
    locked = folder / "b.pbr"
    locked.write_bytes(recordio_bytes(ROWS[:5]))
    locked.chmod(0)
    if os.access(locked, os.R_OK):
        pytest.skip("running as root: permissions do not stop reading")
    with pytest.raises(DataError, match="cannot be opened .*Permission denied") as caught:
        read_within(ChannelSpec("train", tmp_path))
    assert str(locked) in str(caught.value)


# --- corrupt gzip (item 16) ---------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["deflate", "crc", "cut"])
def test_corrupt_gzip_names_channel_and_file(tmp_path, damage):
    folder = channel_folder(tmp_path)
    data = bytearray(gzip.compress(recordio_bytes(ROWS)))
    if damage == "deflate":  # an invalid deflate block: zlib.error, once without channel or file
        data[20:40] = b"\xff" * 20
    elif damage == "crc":
        data[-8] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    (folder / "b.pbr").write_bytes(bytes(data))
    with pytest.raises(DataError) as caught:
        read_within(ChannelSpec("train", tmp_path))
    message = str(caught.value)
    assert "channel 'train'" in message and str(folder / "b.pbr") in message and "gzip" in message


# --- Pipe stalls and the timeout settings (item 22) ------------------------------------------------

def stalling_writer(path: Path, data: bytes, stall: float, done: threading.Event) -> threading.Thread:
    """Writes ``data`` into the FIFO, then keeps it open without writing until ``done`` (or ``stall`` s)."""

    def run():
        with open(path, "wb") as fifo:
            fifo.write(data)
            fifo.flush()
            done.wait(stall)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("content_type", [None, "text/csv"])
def test_writer_that_stalls_fails_the_read_as_a_stall(tmp_path, content_type):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.mkfifo(data_dir / "train_0")
    head = recordio_bytes(ROWS[:100]) if content_type is None else b"1,2,3\n4,5,6\n7,8"
    done = threading.Event()
    writer = stalling_writer(data_dir / "train_0", head, 30, done)
    spec = ChannelSpec("train", data_dir, mode="Pipe", content_type=content_type, pipe_timeout=10,
                       pipe_stall_timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(DataError) as caught:
            read_within(spec)
    finally:
        done.set()
        writer.join(5)
    waited = time.monotonic() - started
    message = str(caught.value)
    assert "channel 'train'" in message and str(data_dir / "train_0") in message
    assert "stalled" in message and f"after {len(head)} bytes" in message and "0.5 s" in message
    assert STALL_TIMEOUT_ENV in message
    assert waited < 10  # the stall limit ended it, not the test's own guard


def test_a_slow_writer_within_the_stall_limit_is_read_whole(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    pieces = [b"a" * 1000, b"b" * 10, b"c"]

    def slow():
        with open(path, "wb") as fifo:
            for piece in pieces:
                fifo.write(piece)
                fifo.flush()
                time.sleep(0.2)

    writer = threading.Thread(target=slow, daemon=True)
    writer.start()
    with open_fifo(path, 10, "train", stall_timeout=5) as stream:
        assert isinstance(stream, FifoReader)
        assert stream.read() == b"".join(pieces) and stream.bytes_read == 1011
    writer.join(5)


def test_huge_timeouts_do_not_overflow_poll(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    writer = threading.Thread(target=lambda: path.write_bytes(b"xyz"), daemon=True)
    writer.start()
    with open_fifo(path, 1e12, "train", stall_timeout=1e12) as stream:
        assert stream.read() == b"xyz"
    writer.join(5)


@pytest.mark.parametrize("text", ["abc", "0", "-5", "nan", "inf", "1e400", "5s"])
def test_timeout_settings_that_are_not_positive_seconds_are_client_errors(monkeypatch, text):
    monkeypatch.setenv("PIPEALGOS_PIPE_TIMEOUT", text)
    with pytest.raises(DataError) as caught:
        timeout_from_env("PIPEALGOS_PIPE_TIMEOUT", 300)
    message = str(caught.value)
    assert f"PIPEALGOS_PIPE_TIMEOUT={text!r}" in message and "seconds" in message and "300" in message


def test_timeout_settings_read_seconds_or_fall_back_to_the_default(monkeypatch, tmp_path):
    monkeypatch.delenv(STALL_TIMEOUT_ENV, raising=False)
    assert timeout_from_env(STALL_TIMEOUT_ENV, 600) == 600
    assert ChannelSpec("train", tmp_path).pipe_stall_timeout == DEFAULT_STALL_TIMEOUT == 600
    monkeypatch.setenv(STALL_TIMEOUT_ENV, " 2.5 ")
    assert ChannelSpec("train", tmp_path).pipe_stall_timeout == 2.5
    monkeypatch.setenv(STALL_TIMEOUT_ENV, "never")
    with pytest.raises(DataError, match=STALL_TIMEOUT_ENV):
        ChannelSpec("train", tmp_path)
