"""The job's channels (pipealgos.platform.channels): File-mode passes kept in memory for callers
that only read them, within PIPEALGOS_CHANNEL_CACHE_MB; every other pass read from its files
or FIFO. A pass that came from memory is told apart by rewriting the files after the first."""

from __future__ import annotations

import numpy as np
import pytest
from mlroot import FifoFeeder, recordio_bytes, write_channel_files

from pipealgos.io.minibatch import concat
from pipealgos.platform.channels import CACHE_ENV, JobChannels, batch_bytes, cache_bytes_from_env
from pipealgos.platform.config import ChannelConfig, ConfigError, MLRoot
from pipealgos.platform.registry import ALGORITHMS

ROWS = 1000


def counts(first: float) -> np.ndarray:
    """Rows whose first column holds ``first`` (which data a pass came from)."""
    x = np.ones((ROWS, 5), np.float32)
    x[:, 0] = first
    return x


def job(tmp_path, modes: dict[str, str] | None = None) -> JobChannels:
    modes = modes or {"train": "File"}
    return JobChannels(MLRoot(tmp_path), {name: ChannelConfig(name, mode) for name, mode in modes.items()},
                       ALGORITHMS["ntm"])


def write(tmp_path, channel: str, first: float) -> None:
    for old in (tmp_path / "input" / "data" / channel).glob("*"):
        old.unlink()
    write_channel_files(tmp_path, channel, [recordio_bytes(counts(first)[:600]), recordio_bytes(counts(first)[600:])])


def firsts(batches) -> set[float]:
    return set(concat(list(batches)).features[:, 0].tolist())


def test_a_read_only_pass_after_the_first_comes_from_memory(tmp_path):
    write(tmp_path, "train", 1.0)
    channels = job(tmp_path)
    first = list(channels.minibatches("train", 0, 64, 5, read_only=True))
    write(tmp_path, "train", 2.0)
    again = list(channels.minibatches("train", 1, 64, 5, read_only=True))
    assert [b.size for b in again] == [b.size for b in first] == [64] * 15 + [40]
    assert firsts(again) == {1.0}  # the kept minibatches, not the rewritten files
    assert firsts(channels.minibatches("train", 2, 64, 5)) == {2.0}  # a caller that may write reads the files
    assert firsts(channels.minibatches("train", 3, 100, 5, read_only=True)) == {2.0}  # another size is read


def test_an_unfinished_pass_is_not_kept(tmp_path):
    write(tmp_path, "train", 1.0)
    channels = job(tmp_path)
    batches = channels.minibatches("train", 0, 64, 5, read_only=True)
    next(batches)
    batches.close()
    write(tmp_path, "train", 2.0)
    assert firsts(channels.minibatches("train", 1, 64, 5, read_only=True)) == {2.0}


def test_pipe_mode_passes_are_always_read(tmp_path):
    (tmp_path / "input" / "data").mkdir(parents=True)
    feeder = FifoFeeder(tmp_path, "train", [recordio_bytes(counts(1.0)), recordio_bytes(counts(2.0))])
    channels = job(tmp_path, {"train": "Pipe"})
    assert firsts(channels.minibatches("train", 0, 64, 5, read_only=True)) == {1.0}
    assert firsts(channels.minibatches("train", 1, 64, 5, read_only=True)) == {2.0}
    feeder.join()


def test_the_budget_bounds_what_all_channels_keep(tmp_path, monkeypatch):
    write(tmp_path, "train", 1.0)
    write(tmp_path, "validation", 1.0)
    one_pass = sum(batch_bytes(b) for b in job(tmp_path).minibatches("train", 0, 64, 5))
    monkeypatch.setattr("pipealgos.platform.channels.cache_bytes_from_env", lambda: one_pass * 3 // 2)
    channels = job(tmp_path, {"train": "File", "validation": "File"})
    list(channels.minibatches("train", 0, 64, 5, read_only=True))
    list(channels.minibatches("validation", 0, 64, 5, read_only=True))
    write(tmp_path, "train", 2.0)
    write(tmp_path, "validation", 2.0)
    assert firsts(channels.minibatches("train", 1, 64, 5, read_only=True)) == {1.0}  # fitted
    assert firsts(channels.minibatches("validation", 1, 64, 5, read_only=True)) == {2.0}  # did not fit what was left


def test_a_budget_of_zero_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "0")
    write(tmp_path, "train", 1.0)
    channels = job(tmp_path)
    list(channels.minibatches("train", 0, 64, 5, read_only=True))
    write(tmp_path, "train", 2.0)
    assert firsts(channels.minibatches("train", 1, 64, 5, read_only=True)) == {2.0}


@pytest.mark.parametrize("value", ["-1", "1.5", "lots"])
def test_a_bad_budget_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(CACHE_ENV, value)
    with pytest.raises(ConfigError, match=f"{CACHE_ENV}={value!r}"):
        cache_bytes_from_env()


def test_the_budget_is_read_in_megabytes(monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "3")
    assert cache_bytes_from_env() == 3_000_000
    monkeypatch.delenv(CACHE_ENV)
    assert cache_bytes_from_env() == 256_000_000
