"""What the runner shows while a job runs, and the JSON summary it prints at the end.

On a terminal, one status line (bytes streamed, MB/s, objects, elapsed, per channel) is
redrawn in place on stderr, with the hosts' log lines scrolling above it. Otherwise (a pipe,
a CI log) every host line is printed as ``[algo-1] ...`` and the status is a plain
``[runner] ...`` line every ``interval`` seconds. Objects, not records, are counted: the
runner moves bytes and never parses them (records are the algorithm's business and appear in
its own log lines).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

MB = 1e6


@dataclass
class ChannelProgress:
    """Totals of one channel over all hosts."""

    name: str
    mode: str
    bytes: int = 0
    objects: int = 0
    planned_objects: int = 0
    first_byte_s: float | None = None
    first_byte_after_open_s: float | None = None
    active_s: float = 0.0

    @property
    def throughput_mb_s(self) -> float:
        return self.bytes / MB / self.active_s if self.active_s > 0 else 0.0

    def describe(self) -> str:
        return (f"{self.name} ({self.mode}): {self.bytes / MB:,.1f} MB, {self.throughput_mb_s:,.1f} MB/s, "
                f"{self.objects} objects delivered ({self.planned_objects} per pass over all hosts)")


class Display:
    """Host log lines and periodic channel status, for a terminal or for a plain log."""

    def __init__(self, stream: TextIO | None = None, mode: str = "auto", interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if mode == "auto" else mode == "tty"
        self.interval = interval
        self.started = time.monotonic()
        self._last_status = self.started
        self._status = ""
        self._lock = threading.Lock()

    def _clear(self) -> None:
        if self.live and self._status:
            self.stream.write("\r\x1b[2K")

    def host_line(self, host: str, line: str) -> None:
        with self._lock:
            self._clear()
            self.stream.write(f"[{host}] {line}\n")
            if self.live and self._status:
                self.stream.write(self._status)
            self.stream.flush()

    def note(self, message: str) -> None:
        self.host_line("runner", message)

    def update(self, channels: list[ChannelProgress], force: bool = False) -> None:
        now = time.monotonic()
        elapsed = f"{now - self.started:,.1f} s"
        text = " | ".join(ch.describe() for ch in channels) or "no data channels"
        with self._lock:
            if self.live:
                self._clear()
                self._status = f"{elapsed} | {text}"[:400]
                self.stream.write(self._status)
                self.stream.flush()
            elif force or now - self._last_status >= self.interval:
                self._last_status = now
                self.stream.write(f"[runner] {elapsed} | {text}\n")
                self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self.live and self._status:
                self.stream.write("\n")
                self._status = ""
            self.stream.flush()


def summary(job_name: str, status: str, secondary: str, failure: str | None, failed_host: str | None,
            exit_codes: dict[str, int | None], channels: list[ChannelProgress], total_s: float,
            peak_disk_bytes: int, artifacts: dict) -> dict:
    """The end-of-job JSON object (DescribeTrainingJob-like names where one exists)."""
    firsts = [ch.first_byte_s for ch in channels if ch.first_byte_s is not None]
    return {
        "TrainingJobName": job_name,
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "FailureReason": failure,
        "FailedHost": failed_host,
        "ExitCodes": exit_codes,
        "TimeToFirstByteSeconds": round(min(firsts), 4) if firsts else None,
        "TotalSeconds": round(total_s, 3),
        "BytesRead": sum(ch.bytes for ch in channels),
        "PeakLocalDiskBytes": peak_disk_bytes,
        "Channels": {
            ch.name: {
                "InputMode": ch.mode,
                "Bytes": ch.bytes,
                "Objects": ch.objects,
                "TimeToFirstByteSeconds": None if ch.first_byte_s is None else round(ch.first_byte_s, 4),
                "FirstByteAfterOpenSeconds": (None if ch.first_byte_after_open_s is None
                                              else round(ch.first_byte_after_open_s, 4)),
                "ActiveSeconds": round(ch.active_s, 3),
                "ThroughputMBps": round(ch.throughput_mb_s, 2),
            }
            for ch in channels
        },
        **artifacts,
    }
