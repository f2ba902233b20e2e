"""``text/csv`` training data: no header, numbers only, the first ``label_size`` columns are the label."""

from __future__ import annotations

import io

import numpy as np

from .errors import DataError
from .minibatch import Minibatch


class CsvDecoder:
    """Decodes buffers of CSV text into dense blocks (see :func:`stream.decode_stream`).

    ``label_size`` is 0 (unlabelled) or 1 (first column is the label). Ragged rows,
    non-numeric fields and NaN/infinity are errors naming the source and 1-based line.
    """

    def __init__(self, source: str, label_size: int, feature_dim: int | None = None) -> None:
        if label_size not in (0, 1):
            raise DataError(f"label_size={label_size} is not supported", source=source,
                            fix="Use text/csv;label_size=0 (no label) or label_size=1 (first column is the label)")
        self.source = source
        self.label_size = label_size
        self.feature_dim = feature_dim
        self.lines = 0

    def decode(self, buf: np.ndarray, pos: int, end: int, base: int, at_eof: bool):
        chunk = buf[pos:end]
        if at_eof:
            stop = end - pos
        else:
            newlines = np.flatnonzero(chunk == 10)
            if not len(newlines):
                return [], pos, (end - pos) * 2 if pos == 0 else 0
            stop = int(newlines[-1]) + 1
        text = chunk[:stop].tobytes().decode("utf-8", errors="replace")
        blocks = []
        if text.strip():
            blocks.append(self._parse(text))
        return blocks, pos + stop, 0

    def _parse(self, text: str) -> Minibatch:
        first_line = self.lines
        lines = text.splitlines()
        self.lines += len(lines)
        try:
            table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError:
            self._locate_error(lines, first_line)
            raise
        if len(table) != sum(1 for line in lines if line.strip()):
            self._locate_error(lines, first_line)
        width = table.shape[1] - self.label_size
        if width <= 0:
            raise DataError(f"line {first_line + 1}: {table.shape[1]} columns leave nothing for features after "
                            f"{self.label_size} label column(s)", source=self.source)
        if self.feature_dim is None:
            self.feature_dim = width
        elif width != self.feature_dim:
            raise DataError(f"line {first_line + 1}: {width} feature columns, expected feature_dim {self.feature_dim}",
                            source=self.source,
                            fix=f"With label_size={self.label_size} every line needs "
                            f"{self.feature_dim + self.label_size} columns")
        if not np.isfinite(table).all():
            bad = int(np.argmin(np.isfinite(table).all(axis=1)))
            raise DataError(f"line {first_line + bad + 1}: NaN or infinity", source=self.source,
                            fix="Remove or impute non-finite values before training")
        labels = table[:, 0].astype(np.float32) if self.label_size else None
        return Minibatch(np.ascontiguousarray(table[:, self.label_size :], dtype=np.float32), labels)

    def _locate_error(self, lines: list[str], first_line: int) -> None:
        width = None
        for i, line in enumerate(lines, start=first_line + 1):
            if not line.strip():
                continue
            fields = line.split(",")
            for field in fields:
                try:
                    float(field)
                except ValueError:
                    raise DataError(f"line {i}: non-numeric field {field.strip()!r}", source=self.source,
                                    fix="CSV training data must be numbers only, without a header row") from None
            if width is None:
                width = len(fields)
            elif len(fields) != width:
                raise DataError(f"line {i}: {len(fields)} columns where earlier lines have {width}",
                                source=self.source, fix="Every line must have the same number of columns")

    def finish(self, offset: int) -> None:
        pass
