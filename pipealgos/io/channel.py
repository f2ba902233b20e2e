"""Training channels: File-mode directories and Pipe-mode FIFOs, read as minibatches.

File mode reads every file under ``<data_dir>/<channel>/`` (recursively, sorted, hidden
files skipped); anything there that is not a regular file (a FIFO, a socket, a device, a
symbolic link to nothing) is refused by name rather than skipped: reading a FIFO would block
forever, and skipping a file would silently train on less data than the user put there.

Pipe mode reads the FIFO ``<data_dir>/<channel>_<epoch>``: it waits for the FIFO to appear
and for its first byte (``PIPEALGOS_PIPE_TIMEOUT`` seconds, default 300), reads to EOF, and
the next epoch opens the next index — the protocol of SageMaker's Pipe mode and of ml-io's
reader. Once data flows, a writer that stays attached but sends nothing for
``PIPEALGOS_PIPE_STALL_TIMEOUT`` seconds (default 600) fails the read as a stall, naming
the FIFO and the bytes read so far, instead of waiting without limit.

Gzip input is recognised by its magic bytes in either mode. Other File-mode files are mapped
and decoded in place (:func:`~pipealgos.io.stream.map_file` says why and what it assumes).

RecordIO-protobuf is decoded on ``PIPEALGOS_DECODE_THREADS`` threads per channel (default 1;
:mod:`pipealgos.io.parallel`), in order; CSV on one.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import io
import math
import mmap
import os
import queue
import select
import stat
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .csv import CsvDecoder
from .errors import DataError
from .minibatch import Minibatch, rebatch
from .parallel import decode_buffer_parallel, decode_stream_parallel, decode_threads_from_env
from .protobuf import RecordDecoder
from .stream import BufferDecoder, Replay, decode_buffer, decode_stream, map_file

F_SETPIPE_SZ = 1031
PIPE_BUFFER = 1 << 20
PIPE_TIMEOUT_ENV = "PIPEALGOS_PIPE_TIMEOUT"
DEFAULT_PIPE_TIMEOUT = 300.0
STALL_TIMEOUT_ENV = "PIPEALGOS_PIPE_STALL_TIMEOUT"
DEFAULT_STALL_TIMEOUT = 600.0
GZIP_MAGIC = b"\x1f\x8b"
RECORDIO_PROTOBUF = "application/x-recordio-protobuf"
# Aliases the real containers accept for RecordIO-protobuf.
_PROTOBUF_TYPES = {RECORDIO_PROTOBUF, "application/x-labeled-vector-protobuf", "protobuf"}


def timeout_from_env(name: str, default: float) -> float:
    """Seconds from the environment variable ``name`` (``default`` when unset or empty).

    Anything but a finite number > 0 is a :class:`DataError` naming the variable, the value
    and the fix (the platform reports it as a client error, exit 1)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise DataError(f"{name}={text!r} is not a number of seconds > 0",
                        fix=f"Set {name} to a number of seconds such as {default:g}, or unset it for the default "
                        f"({default:g})")
    return value


def widen_pipe_buffer(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer on the FIFO ``fd`` (either end): fewer, larger transfers
    between the feeder and the reader. Above ``/proc/sys/fs/pipe-max-size`` an unprivileged
    process is refused; the default buffer then stays, which only costs speed."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BUFFER)
    except OSError:
        pass


@dataclass(frozen=True)
class ContentType:
    """A parsed MIME type: ``text/csv;label_size=1`` -> ("text/csv", {"label_size": "1"})."""

    mime: str
    params: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str | None) -> "ContentType":
        if not value:
            return cls(RECORDIO_PROTOBUF)
        if not isinstance(value, str):
            raise DataError(f"ContentType {value!r} is not a string",
                            fix="Give a MIME type such as application/x-recordio-protobuf or text/csv;label_size=1")
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
    appear and deliver its first byte; ``pipe_stall_timeout`` bounds each wait for more data
    once it flows. The stall timeout defaults to ``PIPEALGOS_PIPE_STALL_TIMEOUT`` (read when
    the spec is made, through :func:`timeout_from_env`), so the setting works wherever specs
    are made; pass it to override. ``decode_threads`` (RecordIO-protobuf only) likewise
    defaults to ``PIPEALGOS_DECODE_THREADS``.
    """

    name: str
    data_dir: Path
    mode: str = "File"
    content_type: str | None = None
    default_label_size: int = 0
    pipe_timeout: float = DEFAULT_PIPE_TIMEOUT
    pipe_stall_timeout: float = field(
        default_factory=lambda: timeout_from_env(STALL_TIMEOUT_ENV, DEFAULT_STALL_TIMEOUT))
    decode_threads: int = field(default_factory=decode_threads_from_env)

    @property
    def parsed_type(self) -> ContentType:
        return ContentType.parse(self.content_type)

    def csv_label_size(self) -> int:
        """Leading label columns of a CSV channel: the ``label_size`` parameter or the default."""
        text = self.parsed_type.params.get("label_size")
        if text is None:
            return self.default_label_size
        if text not in ("0", "1"):
            raise DataError(f"ContentType '{self.content_type}': label_size={text!r} is not supported",
                            channel=self.name,
                            fix="Use text/csv;label_size=0 (no label column) or text/csv;label_size=1 (the first "
                            "column is the label)")
        return int(text)

    def check_readable(self) -> None:
        ctype = self.parsed_type
        if not (ctype.is_csv or ctype.is_protobuf):
            raise DataError(
                f"content type '{self.content_type}' cannot be read", channel=self.name,
                fix="Use application/x-recordio-protobuf or text/csv (with ;label_size=N)",
            )
        if ctype.is_csv:
            self.csv_label_size()  # a bad label_size fails here, before any data is read
        if self.mode not in ("File", "Pipe", "FastFile"):
            raise DataError(f"input mode '{self.mode}' is unknown", channel=self.name,
                            fix="Use File, FastFile or Pipe")


def _inflate_if_gzip(stream: BinaryIO) -> BinaryIO:
    """``stream``, inflated when it starts with gzip's magic bytes."""
    head = b""
    while len(head) < 2:
        chunk = stream.read(2 - len(head))
        if not chunk:
            break
        head += chunk
    replay = Replay(head, stream)
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=replay, mode="rb")
    return replay


def channel_files(spec: ChannelSpec) -> list[Path]:
    """The files of a File-mode channel: recursive, sorted, dot-files and dot-dirs skipped.

    Every entry must be a regular file (or a symbolic link to one): anything else is a
    :class:`DataError` naming it (see the module docstring)."""
    root = spec.data_dir / spec.name
    if not root.is_dir():
        raise DataError(f"channel directory {root} does not exist", channel=spec.name,
                        fix="In File mode each channel's data goes under input/data/<channel>/")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    for path in files:
        _check_regular(path, spec.name)
    return sorted(files, key=lambda p: p.relative_to(root).parts)


_FILE_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}


def _check_regular(path: Path, channel: str) -> None:
    """A DataError unless ``path`` is a regular file, or a symbolic link to one."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path} is a symbolic link to {os.readlink(path)!r}, which does not exist",
                        channel=channel, fix="Remove the link or restore what it points to") from None
    except OSError as exc:
        raise DataError(f"{path} cannot be examined ({exc.strerror})", channel=channel,
                        fix="Check the file's permissions") from None
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise DataError(f"{path} is {kind}, not a regular file: File mode reads regular files only", channel=channel,
                        fix="Remove it from the channel folder (for streamed input use Pipe mode)")


def _wait_readable(fd: int, seconds: float) -> bool:
    """Whether ``fd`` becomes readable (data, or the writer's close) within ``seconds``.

    Waits in slices, since poll() takes whole milliseconds in a C int (~24 days)."""
    deadline = time.monotonic() + seconds
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if poller.poll(min(remaining, 3600.0) * 1000):
            return True


def open_fifo(path: Path, timeout: float, channel: str, stall_timeout: float = DEFAULT_STALL_TIMEOUT) -> BinaryIO:
    """Open a Pipe-mode FIFO: wait for it to exist and for its first byte, up to ``timeout`` s;
    later reads wait up to ``stall_timeout`` s each for more (see :class:`FifoReader`)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() >= deadline:
            raise DataError(
                f"Pipe-mode FIFO {path} did not appear within {timeout:g} s", channel=channel,
                fix="Is the channel configured for Pipe mode and is the platform (or `pipealgos run`) feeding it? "
                f"The wait is set by {PIPE_TIMEOUT_ENV}",
            )
        time.sleep(0.05)
    if not stat.S_ISFIFO(path.stat().st_mode):
        return open(path, "rb", buffering=0)
    # Non-blocking open never hangs; poll() then waits for a writer's first byte (or its
    # close, which is a legitimately empty epoch) without the false EOF a read would give.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    widen_pipe_buffer(fd)
    if not _wait_readable(fd, max(0.0, deadline - time.monotonic())):
        os.close(fd)
        raise DataError(f"no data arrived on Pipe-mode FIFO {path} within {timeout:g} s", channel=channel,
                        fix=f"The writer never opened the FIFO; the wait is set by {PIPE_TIMEOUT_ENV}")
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    return FifoReader(fd, path, stall_timeout)


class FifoReader(io.RawIOBase):
    """A FIFO's read end whose every read waits at most ``stall_timeout`` seconds for data.

    A writer that keeps the FIFO open but stops sending would otherwise block the reader
    forever; here the wait ends in a :class:`DataError` saying it is a stall, with the FIFO,
    the bytes read so far, the time waited and the setting that bounds it."""

    def __init__(self, fd: int, path: Path, stall_timeout: float) -> None:
        super().__init__()
        self.fd = fd
        self.path = path
        self.stall_timeout = stall_timeout
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, view) -> int:
        if not _wait_readable(self.fd, self.stall_timeout):
            raise DataError(
                f"Pipe-mode FIFO stalled: its writer is attached but sent nothing for "
                f"{self.stall_timeout:g} s, after {self.bytes_read} bytes",
                source=str(self.path), offset=self.bytes_read,
                fix="Check the process feeding the FIFO (SageMaker's agent or `pipealgos run`) and its data "
                f"source; the wait is set by {STALL_TIMEOUT_ENV} (seconds, default {DEFAULT_STALL_TIMEOUT:g})",
            )
        n = os.readv(self.fd, [view])
        self.bytes_read += n
        return n

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def _open_file(path: Path, channel: str) -> BinaryIO:
    try:
        return open(path, "rb", buffering=0)
    except OSError as exc:
        raise DataError(f"{path} cannot be opened ({exc.strerror})", channel=channel,
                        fix="Check the file's permissions, or remove it from the channel folder") from None


def open_sources(spec: ChannelSpec, epoch: int) -> Iterator[tuple[str, BinaryIO]]:
    """Yield (source name, open binary stream, not yet inflated) for one pass over the channel."""
    if spec.mode == "Pipe":
        path = spec.data_dir / f"{spec.name}_{epoch}"
        with open_fifo(path, spec.pipe_timeout, spec.name, spec.pipe_stall_timeout) as stream:
            yield str(path), stream
        return
    for path in channel_files(spec):
        with _open_file(path, spec.name) as stream:
            yield str(path), stream


def _map_unless_gzip(stream: BinaryIO) -> mmap.mmap | None:
    """A mapping of the regular file ``stream`` reads (:func:`map_file`), unless it is gzip."""
    mapped = map_file(stream)
    if mapped is not None and mapped[:2] == GZIP_MAGIC:
        mapped.close()  # inflated from the stream instead
        return None
    return mapped


def _decode(stream: BinaryIO, mapped: mmap.mmap | None, decoder: BufferDecoder) -> Iterator[Minibatch]:
    """``decoder``'s blocks of the file in place when it is ``mapped``, else read from ``stream``."""
    return decode_stream(stream, decoder) if mapped is None else decode_buffer(mapped, decoder)


def iter_blocks(spec: ChannelSpec, epoch: int, feature_dim: int | None = None) -> Iterator[Minibatch]:
    """Decoded blocks (of any size) for one pass, with errors located by channel and file."""
    spec.check_readable()
    ctype = spec.parsed_type
    learnt: RecordDecoder | None = None  # the previous file's decoder: its record layout is the next one's guess
    for source, stream in open_sources(spec, epoch):
        try:
            # FastFile's files are fetched from S3 as they are read: read them, in order.
            mapped = _map_unless_gzip(stream) if spec.mode == "File" else None
            if mapped is None:
                stream = _inflate_if_gzip(stream)
            if ctype.is_csv:
                blocks = _decode(stream, mapped, CsvDecoder(source, spec.csv_label_size(), feature_dim))
            elif spec.decode_threads > 1:
                blocks = (decode_stream_parallel(stream, source, feature_dim, spec.decode_threads) if mapped is None
                          else decode_buffer_parallel(mapped, source, feature_dim, spec.decode_threads))
            else:
                decoder = RecordDecoder(source, feature_dim)
                if learnt is not None:
                    decoder.adopt_layout(learnt)
                learnt = decoder
                blocks = _decode(stream, mapped, decoder)
            for block in blocks:
                feature_dim = block.feature_dim
                yield block
        except DataError as exc:
            raise exc.located(channel=spec.name, source=source) from None
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise DataError(f"gzip data is corrupt or cut short ({exc})", channel=spec.name, source=source,
                            fix="The file starts with gzip's magic bytes 1f 8b, so it was read as gzip: re-create "
                            "it (gzip -t checks it) or re-upload it") from None
        except OSError as exc:
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
