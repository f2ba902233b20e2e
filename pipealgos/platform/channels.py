"""The job's channels, from ``inputdataconfig.json`` and the algorithm's declared channel
rules, as the minibatch iterators (or, for raw ``text/plain`` channels, the files) algorithms use.

:func:`check_channels` enforces the rules once, before training starts: required channels
present, no channel the algorithm does not take, each content type and distribution among those
the algorithm accepts. Each refusal names the algorithm, the channel and what is accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipealgos.io import ChannelSpec, ContentType, DataError, Minibatch, iter_minibatches
from pipealgos.io.channel import channel_files, timeout_from_env

from .config import ChannelConfig, ConfigError, MLRoot

DEFAULT_PIPE_TIMEOUT = 300.0


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

    def names(self) -> set[str]:
        return set(self.specs) | self.raw

    def minibatches(self, channel: str, epoch: int, batch_size: int, feature_dim: int | None = None) -> Iterator[Minibatch]:
        if channel in self.raw:
            raise DataError(f"channel '{channel}' holds raw files, not records: read it with files()", channel=channel)
        if channel not in self.specs:
            raise DataError(f"channel '{channel}' is not configured", channel=channel)
        return iter_minibatches(self.specs[channel], epoch, batch_size, feature_dim)

    def files(self, channel: str) -> list[Path]:
        if channel not in self.raw:
            raise DataError(f"channel '{channel}' is not a raw (text/plain) channel of this job", channel=channel)
        return channel_files(ChannelSpec(channel, self.data_dir))
