"""Object sources for the runner: ``s3://`` (boto3, any S3-compatible endpoint) and local files.

Both stores speak in :class:`StoredObject` (a URI plus its size) and offer the four things
the runner needs: list a prefix, read a small text object (a manifest), read a byte range,
and upload a file. ``file://`` URIs and plain paths are the embedded default: nothing needs
to run.

Prefix listing follows S3's meaning: every object whose key *starts with* the prefix
(``s3://b/data/tr`` matches ``data/train/x`` and ``data/tr.csv``). For a local path that is
a directory, every file below it is listed; otherwise every file whose path starts with the
given string. Zero-byte keys ending in ``/`` (folder markers some tools create) are skipped;
everything else is listed, including dot-files such as ``.amazon.manifest``, as SageMaker does.

Errors are :class:`StorageError`, whose ``permanent`` flag tells the caller's retry loop
whether trying again can help (a missing object: no; a refused connection: yes), and whose
``stalled`` flag marks a server that took the request and did not answer within the timeout.

Limits (all settings of ``pipealgos run``): each S3 request waits at most ``timeout`` seconds
for the server (``--s3-timeout``, default 60, for connecting and for each read); a ranged read
is tried ``RetryPolicy.attempts`` times in all (``--s3-attempts``, default 5) with backoff
``0.25 * 2**i`` s between tries. A stalled server therefore fails the job after about
``attempts * timeout`` seconds (5 min by default), with a reason that says it stalled.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

ENDPOINT_ENV = "AWS_ENDPOINT_URL_S3"


class StorageError(OSError):
    """Reading or writing an object failed; the message names the object."""

    def __init__(self, message: str, permanent: bool = False, stalled: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.stalled = stalled


@dataclass(frozen=True)
class StoredObject:
    """One object: its full URI and size in bytes. ``relative`` is its path below the
    listed prefix's folder (where File mode puts it under ``input/data/<channel>/``)."""

    uri: str
    size: int
    relative: str


class ObjectStore(Protocol):
    def list_prefix(self, uri: str) -> list[StoredObject]: ...

    def stat(self, uri: str, relative: str) -> StoredObject: ...

    def read_range(self, uri: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object."""
        ...

    def read_text(self, uri: str) -> str: ...

    def upload(self, path: Path, uri: str) -> None: ...

    def delete(self, uri: str) -> None:
        """Remove the object if it exists."""
        ...


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"'{uri}' is not an s3://bucket/key URI", permanent=True)
    return parsed.netloc, parsed.path.lstrip("/")


def local_path(uri: str) -> Path:
    """A ``file://`` URI or plain path as a Path."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri)


def join_uri(prefix: str, name: str) -> str:
    """``prefix`` + ``/`` + ``name`` without doubling the slash (S3 URIs and paths alike)."""
    return prefix.rstrip("/") + "/" + name.lstrip("/")


class LocalStore:
    """Files on this machine, addressed by path or ``file://`` URI."""

    def list_prefix(self, uri: str) -> list[StoredObject]:
        path = local_path(uri)
        if path.is_dir():
            base, candidates = path, (p for p in path.rglob("*") if p.is_file())
        else:
            base = path.parent
            candidates = (p for p in base.rglob("*") if p.is_file() and str(p).startswith(str(path))) \
                if base.is_dir() else iter(())
        return sorted((StoredObject(str(p), p.stat().st_size, str(p.relative_to(base))) for p in candidates),
                      key=lambda o: o.uri)

    def stat(self, uri: str, relative: str) -> StoredObject:
        path = local_path(uri)
        try:
            return StoredObject(str(path), path.stat().st_size, relative)
        except FileNotFoundError:
            raise StorageError(f"{path} does not exist", permanent=True) from None

    def read_range(self, uri: str, start: int, end: int) -> bytes:
        try:
            with open(local_path(uri), "rb") as f:
                f.seek(start)
                data = f.read(end - start)
        except FileNotFoundError:
            raise StorageError(f"{uri} does not exist (deleted after it was listed?)", permanent=True) from None
        if len(data) != end - start:
            raise StorageError(f"{uri} is shorter than when it was listed (wanted bytes {start}-{end - 1})",
                               permanent=True)
        return data

    def read_text(self, uri: str) -> str:
        try:
            return local_path(uri).read_text()
        except FileNotFoundError:
            raise StorageError(f"{uri} does not exist", permanent=True) from None

    def upload(self, path: Path, uri: str) -> None:
        """Copy to a hidden name beside the target, then rename: never a half-written file."""
        target = local_path(uri)
        partial = target.with_name(f".{target.name}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, partial)
            os.replace(partial, target)
        except OSError as exc:
            if partial.parent.is_dir():
                partial.unlink(missing_ok=True)
            raise StorageError(f"writing {target} failed: {exc}", permanent=True) from None

    def delete(self, uri: str) -> None:
        try:
            local_path(uri).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"removing {uri} failed: {exc}", permanent=True) from None


class S3Store:
    """An S3 or S3-compatible service through boto3.

    Retries are left to the caller (so that its error can name the object and the attempt
    count); the client itself is told to try once and to give up on a dead server quickly.
    """

    def __init__(self, endpoint_url: str | None = None, max_connections: int = 64, timeout: float = 60.0) -> None:
        import boto3
        from botocore.config import Config

        self.endpoint_url = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
        self.timeout = timeout
        config = Config(max_pool_connections=max_connections, retries={"total_max_attempts": 1},
                        connect_timeout=timeout, read_timeout=timeout)
        self.client = boto3.client("s3", endpoint_url=self.endpoint_url, config=config)

    def _error(self, exc: Exception, uri: str) -> StorageError:
        from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

        if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError)):
            server = self.endpoint_url or "AWS S3"
            return StorageError(f"{uri}: the S3 server ({server}) stalled: no answer within {self.timeout:g} s "
                                "(--s3-timeout)", stalled=True)

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            permanent = code in ("NoSuchKey", "NoSuchBucket", "404", "AccessDenied", "InvalidAccessKeyId",
                                 "SignatureDoesNotMatch", "InvalidRange", "403") or status in (403, 404, 416)
            hint = " (deleted after it was listed?)" if code in ("NoSuchKey", "404") else ""
            return StorageError(f"{uri}: {code or status}{hint}: {exc}", permanent=permanent)
        return StorageError(f"{uri}: {type(exc).__name__}: {exc}")

    def list_prefix(self, uri: str) -> list[StoredObject]:
        bucket, prefix = split_s3(uri)
        folder = prefix[: prefix.rfind("/") + 1]
        objects = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key.endswith("/") and item["Size"] == 0:
                        continue
                    objects.append(StoredObject(f"s3://{bucket}/{key}", int(item["Size"]), key[len(folder):]))
        except Exception as exc:
            raise self._error(exc, uri) from None
        return sorted(objects, key=lambda o: o.uri)

    def stat(self, uri: str, relative: str) -> StoredObject:
        bucket, key = split_s3(uri)
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise self._error(exc, uri) from None
        return StoredObject(uri, int(head["ContentLength"]), relative)

    def read_range(self, uri: str, start: int, end: int) -> bytes:
        bucket, key = split_s3(uri)
        try:
            body = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"]
            data = body.read()
        except Exception as exc:
            raise self._error(exc, uri) from None
        if len(data) != end - start:
            raise StorageError(f"{uri}: asked for bytes {start}-{end - 1}, got {len(data)} bytes")
        return data

    def read_text(self, uri: str) -> str:
        bucket, key = split_s3(uri)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        except Exception as exc:
            raise self._error(exc, uri) from None

    def upload(self, path: Path, uri: str) -> None:
        bucket, key = split_s3(uri)
        try:
            self.client.upload_file(str(path), bucket, key)
        except Exception as exc:
            raise self._error(exc, uri) from None

    def delete(self, uri: str) -> None:
        bucket, key = split_s3(uri)
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise self._error(exc, uri) from None


class Stores:
    """Picks the store for a URI; the S3 client is made on first use."""

    def __init__(self, endpoint_url: str | None = None, timeout: float = 60.0) -> None:
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self._s3: S3Store | None = None
        self._local = LocalStore()

    def for_uri(self, uri: str) -> ObjectStore:
        if is_s3(uri):
            if self._s3 is None:
                self._s3 = S3Store(self.endpoint_url, timeout=self.timeout)
            return self._s3
        return self._local


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all, sleeping ``backoff * 2**i`` seconds after failure i."""

    attempts: int = 5
    backoff: float = 0.25


def read_range_with_retry(store: ObjectStore, uri: str, start: int, end: int, retry: RetryPolicy,
                          should_stop=lambda: False) -> bytes:
    """``store.read_range`` retried with exponential backoff; a permanent error is not retried.

    Raises StorageError naming the object, the byte range and the attempt count."""
    for attempt in range(retry.attempts):
        try:
            return store.read_range(uri, start, end)
        except StorageError as exc:
            last = exc
            if exc.permanent or attempt == retry.attempts - 1 or should_stop():
                break
            time.sleep(retry.backoff * 2**attempt)
    tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
    raise StorageError(f"reading {uri} (bytes {start}-{end - 1}) failed after {tries} (--s3-attempts): {last}",
                       permanent=last.permanent, stalled=last.stalled)
