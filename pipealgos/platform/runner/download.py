"""File mode: download a host's objects into ``input/data/<channel>/`` before training starts.

Objects are downloaded in parallel (``workers`` at a time), each in ranges of ``chunk_size``
with the same retries as the Pipe feeder, and land at their path relative to the listed
prefix's folder (``s3://b/data/train/part-1.pbr`` listed from ``s3://b/data/train/`` becomes
``input/data/train/part-1.pbr``). A failed object fails the whole download, naming it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .feeder import FeedOptions
from .storage import ObjectStore, StorageError, StoredObject, read_range_with_retry


class DownloadCounter:
    """Bytes written so far (several threads add to it)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.objects = 0
        self._lock = threading.Lock()

    def add(self, n: int, objects: int = 0) -> None:
        with self._lock:
            self.bytes += n
            self.objects += objects


def _safe_target(folder: Path, relative: str) -> Path:
    target = (folder / relative).resolve()
    if folder.resolve() not in target.parents:
        raise StorageError(f"object path '{relative}' would land outside {folder}", permanent=True)
    return target


def download_objects(store: ObjectStore, objects: Sequence[StoredObject], folder: Path, options: FeedOptions,
                     counter: DownloadCounter) -> None:
    """Download ``objects`` into ``folder``; raises StorageError naming the first object that failed."""
    folder.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def fetch(obj: StoredObject) -> None:
        target = _safe_target(folder, obj.relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            for start in range(0, obj.size, options.chunk_size):
                if stop.is_set():
                    return
                end = min(obj.size, start + options.chunk_size)
                out.write(read_range_with_retry(store, obj.uri, start, end, options.retry, stop.is_set))
                counter.add(end - start)
        counter.add(0, objects=1)

    with ThreadPoolExecutor(options.workers, thread_name_prefix="download") as pool:
        futures = [pool.submit(fetch, obj) for obj in objects]
        try:
            for future in futures:
                future.result()
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
