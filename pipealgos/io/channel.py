"""Training channels: File-mode directories and Pipe-mode FIFOs, read as minibatches.

File mode reads every file under ``<data_dir>/<channel>/`` (recursively, sorted, hidden
files skipped). Pipe mode reads the FIFO ``<data_dir>/<channel>_<epoch>``: it waits for the
FIFO to appear and for its first byte (with a timeout), reads to EOF, and the next epoch
opens the next index — the protocol of SageMaker's Pipe mode and of ml-io's reader.
Gzip input is recognised by its magic bytes in either mode.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import os
import queue
import select
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .csv import CsvDecoder
from .errors import DataError
from .minibatch import Minibatch, rebatch
from .protobuf import RecordDecoder
from .stream import decode_stream

F_SETPIPE_SZ = 1031
PIPE_BUFFER = 1 << 20
RECORDIO_PROTOBUF = "application/x-recordio-protobuf"
# Aliases the real containers accept for RecordIO-protobuf.
_PROTOBUF_TYPES = {RECORDIO_PROTOBUF, "application/x-labeled-vector-protobuf", "protobuf"}


@dataclass(frozen=True)
class ContentType:
    """A parsed MIME type: ``text/csv;label_size=1`` -> ("text/csv", {"label_size": "1"})."""

    mime: str
    params: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str | None) -> "ContentType":
        if not value:
            return cls(RECORDIO_PROTOBUF)
        mime, *rest = [part.strip() for part in value.split(";")]
        params = {}
        for item in rest:
            if "=" in item:
                key, val = item.split("=", 1)
                params[key.strip().lower()] = val.strip()
        mime = mime.lower()
        return cls(RECORDIO_PROTOBUF if mime in _PROTOBUF_TYPES else mime, params)

    @property
    def is_csv(self) -> bool:
        return self.mime == "text/csv"

    @property
    def is_protobuf(self) -> bool:
        return self.mime == RECORDIO_PROTOBUF


@dataclass(frozen=True)
class ChannelSpec:
    """What the IO layer needs to know about one channel.

    ``default_label_size`` applies to CSV without a ``label_size`` parameter (1 for
    supervised algorithms, 0 otherwise); ``pipe_timeout`` bounds the wait for a FIFO to
    appear and deliver its first byte.
    """

    name: str
    data_dir: Path
    mode: str = "File"
    content_type: str | None = None
    default_label_size: int = 0
    pipe_timeout: float = 300.0

    @property
    def parsed_type(self) -> ContentType:
        return ContentType.parse(self.content_type)

    def check_readable(self) -> None:
        ctype = self.parsed_type
        if not (ctype.is_csv or ctype.is_protobuf):
            raise DataError(
                f"content type '{self.content_type}' cannot be read", channel=self.name,
                fix="Use application/x-recordio-protobuf or text/csv (with ;label_size=N)",
            )
        if self.mode not in ("File", "Pipe", "FastFile"):
            raise DataError(f"input mode '{self.mode}' is unknown", channel=self.name,
                            fix="Use File, FastFile or Pipe")


class _Replay(BinaryIO):
    """A stream with already-read leading bytes put back (for sniffing a FIFO)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head = head
        self.rest = rest

    def readinto(self, view) -> int:
        if self.head:
            n = min(len(view), len(self.head))
            view[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.rest.readinto(view)

    def read(self, size: int = -1) -> bytes:
        buf = bytearray(size if size >= 0 else 1 << 20)
        n = self.readinto(memoryview(buf))
        return bytes(buf[:n])

    def close(self) -> None:
        self.rest.close()


def _inflate_if_gzip(stream: BinaryIO) -> BinaryIO:
    head = b""
    while len(head) < 2:
        chunk = stream.read(2 - len(head))
        if not chunk:
            break
        head += chunk
    replay = _Replay(head, stream)
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=replay, mode="rb")
    return replay


def channel_files(spec: ChannelSpec) -> list[Path]:
    """The files of a File-mode channel: recursive, sorted, dot-files and dot-dirs skipped."""
    root = spec.data_dir / spec.name
    if not root.is_dir():
        raise DataError(f"channel directory {root} does not exist", channel=spec.name,
                        fix="In File mode each channel's data goes under input/data/<channel>/")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return sorted(files, key=lambda p: p.relative_to(root).parts)


def open_fifo(path: Path, timeout: float, channel: str) -> BinaryIO:
    """Open a Pipe-mode FIFO: wait for it to exist and for its first byte, up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() >= deadline:
            raise DataError(
                f"Pipe-mode FIFO {path} did not appear within {timeout:g} s", channel=channel,
                fix="Is the channel configured for Pipe mode and is the platform (or `pipealgos run`) feeding it? "
                "The wait is set by PIPEALGOS_PIPE_TIMEOUT",
            )
        time.sleep(0.05)
    if not stat.S_ISFIFO(path.stat().st_mode):
        return open(path, "rb", buffering=0)
    # Non-blocking open never hangs; poll() then waits for a writer's first byte (or its
    # close, which is a legitimately empty epoch) without the false EOF a read would give.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BUFFER)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size for unprivileged users: keep the default
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    remaining = max(0.0, deadline - time.monotonic())
    if not poller.poll(remaining * 1000):
        os.close(fd)
        raise DataError(f"no data arrived on Pipe-mode FIFO {path} within {timeout:g} s", channel=channel,
                        fix="The writer never opened the FIFO; the wait is set by PIPEALGOS_PIPE_TIMEOUT")
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    return os.fdopen(fd, "rb", buffering=0)


def open_sources(spec: ChannelSpec, epoch: int) -> Iterator[tuple[str, BinaryIO]]:
    """Yield (source name, open binary stream) for one pass over the channel."""
    if spec.mode == "Pipe":
        path = spec.data_dir / f"{spec.name}_{epoch}"
        stream = open_fifo(path, spec.pipe_timeout, spec.name)
        try:
            yield str(path), _inflate_if_gzip(stream)
        finally:
            stream.close()
        return
    for path in channel_files(spec):
        with open(path, "rb", buffering=0) as stream:
            yield str(path), _inflate_if_gzip(stream)


def iter_blocks(spec: ChannelSpec, epoch: int, feature_dim: int | None = None) -> Iterator[Minibatch]:
    """Decoded blocks (of any size) for one pass, with errors located by channel and file."""
    spec.check_readable()
    ctype = spec.parsed_type
    for source, stream in open_sources(spec, epoch):
        if ctype.is_csv:
            label_size = int(ctype.params.get("label_size", spec.default_label_size))
            decoder = CsvDecoder(source, label_size, feature_dim)
        else:
            decoder = RecordDecoder(source, feature_dim)
        try:
            for block in decode_stream(stream, decoder):
                feature_dim = block.feature_dim
                yield block
        except DataError as exc:
            raise exc.located(channel=spec.name) from None
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            if getattr(exc, "errno", None) == errno.EPIPE:
                raise
            raise DataError(f"reading failed: {exc}", channel=spec.name, source=source) from None


def iter_minibatches(
    spec: ChannelSpec,
    epoch: int,
    batch_size: int,
    feature_dim: int | None = None,
    readahead: int = 4,
) -> Iterator[Minibatch]:
    """Minibatches of ``batch_size`` rows for one pass, decoded ahead on a background thread."""
    return Readahead(rebatch(iter_blocks(spec, epoch, feature_dim), batch_size), readahead)


class Readahead(Iterator[Minibatch]):
    """Runs an iterator on a thread, ``depth`` items ahead; errors re-raise in the consumer.

    Closing it (or dropping it) stops the producer at its next item.
    """

    _DONE = object()

    def __init__(self, source: Iterator, depth: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), daemon=True, name="readahead")
        self._thread.start()

    def _run(self, source: Iterator) -> None:
        try:
            for item in source:
                if not self._put(item):
                    break
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, who re-raises it
            self._put(exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self) -> Minibatch:
        item = self._queue.get()
        if item is self._DONE:
            self._queue.put(item)
            raise StopIteration
        if isinstance(item, BaseException):
            self._queue.put(self._DONE)
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __del__(self) -> None:
        self._stop.set()
