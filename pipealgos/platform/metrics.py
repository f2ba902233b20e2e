"""Metric and log lines in the form SageMaker's built-ins print and its regexes parse.

``#quality_metric: host=algo-1, epoch=0, train msd <loss>=0.0658`` (``epoch=`` only for
per-epoch values), ``#progress_metric: host=algo-1, completed 6 % of epochs``,
``#throughput_metric: host=algo-1, train throughput=2355.58 records/second``; each behind
the Python logging prefix ``[MM/DD/YYYY HH:MM:SS INFO <thread-id>]`` the real ones carry.
"""

from __future__ import annotations

import logging
import sys
import threading
import time


class MetricsReporter:
    """Prints metric lines for one host to ``stream`` (stdout: CloudWatch on SageMaker)."""

    def __init__(self, host: str, stream=None) -> None:
        self.host = host
        self.stream = stream or sys.stdout

    def _emit(self, text: str, level: str = "INFO") -> None:
        stamp = time.strftime("%m/%d/%Y %H:%M:%S")
        self.stream.write(f"[{stamp} {level} {threading.get_ident()}] {text}\n")
        self.stream.flush()

    def quality(self, channel: str, name: str, value: float, kind: str = "loss", epoch: int | None = None) -> None:
        epoch_part = "" if epoch is None else f"epoch={epoch}, "
        self._emit(f"#quality_metric: host={self.host}, {epoch_part}{channel} {name} <{kind}>={value:.6g}")

    def test_score(self, name: str, value: float) -> None:
        """The summary line some built-ins print for each test metric (``#test_score (algo-1) :
        ('rmse', 0.1909)``, algorithms.md section 4)."""
        self._emit(f"#test_score ({self.host}) : ('{name}', {value})")

    def progress(self, percent: float) -> None:
        self._emit(f"#progress_metric: host={self.host}, completed {percent:g} % of epochs")

    def throughput(self, records_per_second: float, channel: str = "train") -> None:
        self._emit(f"#throughput_metric: host={self.host}, {channel} throughput={records_per_second:.2f} records/second")

    def info(self, message: str) -> None:
        self._emit(message)

    def error(self, message: str) -> None:
        self._emit(message, "ERROR")


def configure_logging() -> None:
    """Library log records (ours and torch's) in the same prefix form, on stderr."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(levelname)s %(thread)d] %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S")
