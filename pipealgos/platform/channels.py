"""The job's channels, from ``inputdataconfig.json`` and the algorithm's declared channel
rules, as the minibatch iterators (or, for raw ``text/plain`` channels, the files) algorithms use.

:func:`check_channels` enforces the rules once, before training starts: required channels
present, no channel the algorithm does not take, each content type and distribution among those
the algorithm accepts. Each refusal names the algorithm, the channel and what is accepted.

Passes kept in memory: a caller that only reads its minibatches (``read_only=True``) gets the
passes after the first of a File-mode channel (of one minibatch size) as the minibatches of the
first complete pass, while all the kept minibatches fit ``PIPEALGOS_CHANNEL_CACHE_MB`` (default
256; 0 keeps none). File mode's files do not change during a job, so the passes are the same;
reading one costs a thread, opening and decoding the files, and the hand-offs between the
reader thread and the algorithm, which on a small corpus trained for many epochs was a fifth
of the time (NTM on Reuters). Pipe mode's passes are always read: each epoch is its own FIFO.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import scipy.sparse as sp

from pipealgos.io import ChannelSpec, ContentType, DataError, Minibatch, iter_minibatches
from pipealgos.io.channel import Readahead, channel_files, timeout_from_env

from .config import ChannelConfig, ConfigError, MLRoot

DEFAULT_PIPE_TIMEOUT = 300.0
CACHE_ENV = "PIPEALGOS_CHANNEL_CACHE_MB"
DEFAULT_CACHE_MB = 256


def cache_bytes_from_env() -> int:
    """The bytes of minibatches :class:`JobChannels` may keep: ``PIPEALGOS_CHANNEL_CACHE_MB``
    (MB = 10^6 bytes; default 256, 0 keeps none). Anything but a whole number >= 0 is a
    :class:`ConfigError` naming the variable."""
    text = os.environ.get(CACHE_ENV, "").strip()
    if not text:
        return DEFAULT_CACHE_MB * 10**6
    if not text.isdigit():
        raise ConfigError(f"{CACHE_ENV}={text!r} is not a whole number of megabytes: set it to e.g. "
                          f"{DEFAULT_CACHE_MB}, to 0 to read every pass from the files, or unset it")
    return int(text) * 10**6


def batch_bytes(batch: Minibatch) -> int:
    """The bytes a minibatch's arrays hold."""
    features = batch.features
    arrays = [features.data, features.indices, features.indptr] if sp.issparse(features) else [features]
    if batch.labels is not None:
        arrays.append(batch.labels)
    return sum(a.nbytes for a in arrays)


def check_channels(spec, configs: dict[str, ChannelConfig]) -> None:
    """Refuse a channel set ``spec`` (an :class:`~pipealgos.platform.registry.AlgorithmSpec`) cannot train on."""
    missing = [rule.name for rule in spec.channels if rule.required and rule.name not in configs]
    if missing:
        raise ConfigError(f"{spec.name} needs the channel(s) {missing}, missing from inputdataconfig.json "
                          f"(configured: {sorted(configs) or 'none'})")
    unknown = sorted(set(configs) - set(spec.channel_names))
    if unknown:
        raise ConfigError(f"channel(s) {unknown} are not used by {spec.name}; valid channels: {spec.channel_names}")
    for name, config in configs.items():
        rule = spec.channel(name)
        # A channel without ContentType is RecordIO-protobuf (the SDK's RecordSet), or, on a
        # raw channel, the raw type it declares.
        if config.content_type is None and rule.raw:
            mime = rule.content_types[0]
        else:
            mime = ContentType.parse(config.content_type).mime
        if mime not in rule.content_types:
            raise ConfigError(f"{spec.name} does not read ContentType '{config.content_type or mime}' on channel "
                              f"'{name}': use one of {', '.join(rule.content_types)}")
        if rule.distribution and config.distribution and config.distribution != rule.distribution:
            raise ConfigError(f"{spec.name} takes channel '{name}' with S3DataDistributionType {rule.distribution} "
                              f"only, not {config.distribution}: set it to {rule.distribution}")
        if rule.raw and config.input_mode == "Pipe":
            raise ConfigError(f"channel '{name}' of {spec.name} holds {rule.content_types[0]} files, which are read "
                              "as files: set its InputMode to File")


class JobChannels:
    """Implements :class:`pipealgos.algorithms.base.Channels` over an ML root."""

    def __init__(self, ml: MLRoot, configs: dict[str, ChannelConfig], spec) -> None:
        timeout = timeout_from_env("PIPEALGOS_PIPE_TIMEOUT", DEFAULT_PIPE_TIMEOUT)
        self.data_dir = ml.data_dir
        self.raw = {name for name in configs if spec.channel(name).raw}
        self.specs = {
            name: ChannelSpec(name, ml.data_dir, cfg.input_mode, cfg.content_type, spec.channel(name).label_size, timeout)
            for name, cfg in configs.items() if name not in self.raw
        }
        for channel in self.specs.values():
            channel.check_readable()
        self.cache_left = cache_bytes_from_env()
        # (channel, batch size, feature_dim) -> the minibatches of a complete pass
        self.kept: dict[tuple[str, int, int | None], list[Minibatch]] = {}

    def names(self) -> set[str]:
        return set(self.specs) | self.raw

    def minibatches(self, channel: str, epoch: int, batch_size: int, feature_dim: int | None = None,
                    read_only: bool = False) -> Iterator[Minibatch]:
        """One pass; ``read_only``: the caller never writes into the minibatches' arrays, so a
        File-mode pass may come from memory (module docstring)."""
        if channel in self.raw:
            raise DataError(f"channel '{channel}' holds raw files, not records: read it with files()", channel=channel)
        if channel not in self.specs:
            raise DataError(f"channel '{channel}' is not configured", channel=channel)
        spec = self.specs[channel]
        if not read_only or spec.mode == "Pipe" or self.cache_left <= 0:
            return iter_minibatches(spec, epoch, batch_size, feature_dim)
        key = (channel, batch_size, feature_dim)
        kept = self.kept.get(key)
        if kept is not None:
            return iter(kept)
        return self._keeping(key, iter_minibatches(spec, epoch, batch_size, feature_dim))

    def _keeping(self, key: tuple[str, int, int | None], batches: Readahead) -> Iterator[Minibatch]:
        """``batches`` (a reader's pass), kept once the caller has taken them all if they fit
        what is left of the budget; a caller that stops early stops the reader."""
        kept: list[Minibatch] | None = []
        size = 0
        try:
            for batch in batches:
                if kept is not None:
                    size += batch_bytes(batch)
                    if size <= self.cache_left:
                        kept.append(batch)
                    else:
                        kept = None
                yield batch
        finally:
            batches.close()
        if kept is not None and size <= self.cache_left:  # another channel's pass may have kept its own since
            self.cache_left -= size
            self.kept[key] = kept

    def files(self, channel: str) -> list[Path]:
        if channel not in self.raw:
            raise DataError(f"channel '{channel}' is not a raw (text/plain) channel of this job", channel=channel)
        return channel_files(ChannelSpec(channel, self.data_dir))
