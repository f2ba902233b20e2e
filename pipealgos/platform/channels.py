"""The job's channels, from ``inputdataconfig.json``, as the minibatch iterators algorithms use."""

from __future__ import annotations

import os
from collections.abc import Iterator

from pipealgos.io import ChannelSpec, DataError, Minibatch, iter_minibatches

from .config import ChannelConfig, MLRoot

DEFAULT_PIPE_TIMEOUT = 300.0


class JobChannels:
    """Implements :class:`pipealgos.algorithms.base.Channels` over an ML root."""

    def __init__(self, ml: MLRoot, configs: dict[str, ChannelConfig], default_label_size: int) -> None:
        timeout = float(os.environ.get("PIPEALGOS_PIPE_TIMEOUT", DEFAULT_PIPE_TIMEOUT))
        self.specs = {
            name: ChannelSpec(name, ml.data_dir, cfg.input_mode, cfg.content_type, default_label_size, timeout)
            for name, cfg in configs.items()
        }
        for spec in self.specs.values():
            spec.check_readable()

    def names(self) -> set[str]:
        return set(self.specs)

    def minibatches(self, channel: str, epoch: int, batch_size: int, feature_dim: int | None = None) -> Iterator[Minibatch]:
        if channel not in self.specs:
            raise DataError(f"channel '{channel}' is not configured", channel=channel)
        return iter_minibatches(self.specs[channel], epoch, batch_size, feature_dim)
