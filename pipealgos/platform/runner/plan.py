"""Which objects each host reads, in which order: pure functions plus the listing step.

* ``ManifestFile`` (the SDK's ``.amazon.manifest``): a JSON array whose first element is
  ``{"prefix": "s3://bucket/path/"}`` and whose other elements are keys relative to it.
* ``S3Prefix``: every object under the prefix, in key order. A Pipe channel leaves out hidden
  objects (a path component below the prefix starting with ``.``, such as the
  ``.amazon.manifest`` that ``convert --manifest`` writes beside its shards), as File mode's
  reader skips hidden files: the same prefix trains the same in both modes.
* ``ShardedByS3Key``: :func:`shard` deals the objects round-robin over the hosts (object i
  goes to host ``i mod n``), so every object reaches exactly one host, counts differ by at
  most one, and no object is ever split. ``FullyReplicated`` gives each host all objects.
* ``ShuffleConfig.Seed``: :func:`epoch_order` permutes the objects with a generator seeded by
  (seed, epoch) — the same seed always gives the same order, each epoch a different one. As
  the SageMaker docs describe for ShardedByS3Key with ShuffleConfig, the shuffle happens
  *before* sharding, so the objects a host gets change from epoch to epoch (each epoch still
  gives every object to exactly one host). Shuffling applies to Pipe mode only; File mode
  downloads once, unshuffled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from .storage import ObjectStore, StorageError, StoredObject, join_uri

T = TypeVar("T")


class PlanError(ValueError):
    """The channel's input cannot be listed or is empty; the message names the channel and URI."""


def parse_manifest(text: str, source: str) -> tuple[str, list[str]]:
    """(prefix, relative keys) of a ManifestFile body."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"manifest {source} is not valid JSON ({exc})") from None
    if (not isinstance(data, list) or not data or not isinstance(data[0], dict)
            or not isinstance(data[0].get("prefix"), str)):
        raise PlanError(f'manifest {source} must be a JSON array starting with {{"prefix": "s3://bucket/path/"}}, '
                        "followed by object keys relative to that prefix")
    keys = data[1:]
    bad = [k for k in keys if not isinstance(k, str) or not k]
    if bad:
        raise PlanError(f"manifest {source}: entries after the prefix must be non-empty strings, found {bad[0]!r}")
    return data[0]["prefix"], keys


def is_hidden(obj: StoredObject) -> bool:
    """A component of the path below the prefix starts with ``.`` (File mode's reader skips it)."""
    return any(part.startswith(".") for part in obj.relative.split("/"))


def list_objects(store: ObjectStore, uri: str, data_type: str, channel: str,
                 skip_hidden: bool = False) -> list[StoredObject]:
    """The channel's objects from an ``S3Prefix`` or a ``ManifestFile``; never empty.
    ``skip_hidden`` (Pipe channels) leaves out what :func:`is_hidden` says File mode skips."""
    try:
        if data_type == "ManifestFile":
            prefix, keys = parse_manifest(store.read_text(uri), uri)
            objects = [store.stat(join_uri(prefix, key), key) for key in keys]
        else:
            objects = store.list_prefix(uri)
    except StorageError as exc:
        raise PlanError(f"channel '{channel}': listing {uri} failed: {exc}") from None
    if skip_hidden:
        hidden = [o.relative for o in objects if is_hidden(o)]
        objects = [o for o in objects if not is_hidden(o)]
        if hidden and not objects:
            raise PlanError(f"channel '{channel}': {uri} holds only hidden objects ({', '.join(hidden[:3])}), which "
                            "are not training data. Point S3Uri at the data, or use S3DataType ManifestFile to "
                            "read a manifest")
    if not objects:
        raise PlanError(f"channel '{channel}': no objects found under {data_type} {uri}. "
                        "Check the S3Uri (an S3Prefix matches keys starting with it) and that the data was uploaded")
    return objects


def shard(objects: Sequence[T], host_index: int, host_count: int) -> list[T]:
    """Host ``host_index``'s share under ShardedByS3Key: objects ``host_index, host_index + n, ...``."""
    if not 0 <= host_index < host_count:
        raise ValueError(f"host index {host_index} outside 0..{host_count - 1}")
    return list(objects[host_index::host_count])


def epoch_order(objects: Sequence[T], seed: int | None, epoch: int) -> list[T]:
    """The objects in this epoch's order: as listed without a seed, else a seeded permutation."""
    if seed is None:
        return list(objects)
    permutation = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, epoch]).permutation(len(objects))
    return [objects[i] for i in permutation]


def host_objects(objects: Sequence[T], host_index: int, host_count: int, sharded: bool,
                 seed: int | None = None, epoch: int = 0) -> list[T]:
    """What one host reads in one epoch: shuffle (if seeded), then shard (if sharded)."""
    ordered = epoch_order(objects, seed, epoch)
    return shard(ordered, host_index, host_count) if sharded else ordered
