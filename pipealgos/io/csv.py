"""``text/csv`` training data: no header, numbers only, the first ``label_size`` columns are the label.

Lines are counted as a text editor does: 1-based physical lines of the file, every ``\\n``
ending one, blank lines included (``pipealgos convert`` names CSV lines the same way). A line
holding only ASCII whitespace is blank and skipped.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from .errors import DataError
from .minibatch import Minibatch, first_nonfinite_row

#: What a blank line may hold (``bytes.strip()``'s set, so ``convert``'s row count agrees).
BLANK = " \t\r\n\x0b\x0c"
_NONFINITE_FIX = ("Remove or impute non-finite values before training; values are read as float32, "
                  "so numbers beyond +-3.4e38 are infinite too")


class CsvDecoder:
    """Decodes buffers of CSV text into dense blocks (see :func:`stream.decode_stream`).

    ``label_size`` is 0 (unlabelled) or 1 (first column is the label). Ragged rows,
    non-numeric fields and NaN/infinity (checked after the float32 cast) are errors naming
    the source and line (see the module docstring for how lines are counted).
    """

    def __init__(self, source: str, label_size: int, feature_dim: int | None = None) -> None:
        if label_size not in (0, 1):
            raise DataError(f"label_size={label_size} is not supported", source=source,
                            fix="Use text/csv;label_size=0 (no label) or label_size=1 (first column is the label)")
        self.source = source
        self.label_size = label_size
        self.feature_dim = feature_dim
        self.lines = 0  # physical lines before the text being parsed

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
        if text.strip(BLANK):
            blocks.append(self._parse(text))
        else:
            self.lines += text.count("\n")
        return blocks, pos + stop, 0

    def _parse(self, text: str) -> Minibatch:
        """One block of whole lines (the last one may lack its newline, at end of data)."""
        first_line = self.lines
        physical = text.count("\n") + (not text.endswith("\n"))
        self.lines += text.count("\n")
        table = _loadtxt(text)
        if table is None or len(table) != physical:
            # Blank lines (loadtxt skips empty ones but fails on whitespace-only ones), or an error.
            lines = text.split("\n")[:physical]
            table = self._parse_lines(lines, first_line)
            line_numbers = [first_line + i + 1 for i, line in enumerate(lines) if line.strip(BLANK)]
        else:
            line_numbers = range(first_line + 1, first_line + physical + 1)
        width = table.shape[1] - self.label_size
        if width <= 0:
            raise DataError(f"line {line_numbers[0]}: {table.shape[1]} columns leave nothing for features after "
                            f"{self.label_size} label column(s)", source=self.source)
        if self.feature_dim is None:
            self.feature_dim = width
        elif width != self.feature_dim:
            raise DataError(f"line {line_numbers[0]}: {width} feature columns, expected feature_dim {self.feature_dim}",
                            source=self.source,
                            fix=f"With label_size={self.label_size} every line needs "
                            f"{self.feature_dim + self.label_size} columns")
        with np.errstate(over="ignore"):  # beyond float32's range: inf, refused below
            features = np.ascontiguousarray(table[:, self.label_size :], dtype=np.float32)
            labels = table[:, 0].astype(np.float32) if self.label_size else None
        for values, what in ((features, "NaN or infinity"), (labels, "NaN or infinite label")):
            row = None if values is None else first_nonfinite_row(values)
            if row is not None:
                raise DataError(f"line {line_numbers[row]}: {what}", source=self.source, fix=_NONFINITE_FIX)
        return Minibatch(features, labels)

    def _parse_lines(self, lines: list[str], first_line: int) -> np.ndarray:
        """The table of the non-blank ``lines``, or a DataError naming the first bad line."""
        numbered = [(first_line + i + 1, line) for i, line in enumerate(lines) if line.strip(BLANK)]
        table = _loadtxt("\n".join(line for _, line in numbered))
        if table is not None and len(table) == len(numbered):
            return table
        width = None
        for number, line in numbered:
            row = _loadtxt(line)
            if row is None or len(row) != 1:
                raise DataError(f"line {number}: {_describe_bad_line(line)}", source=self.source,
                                fix="CSV training data must be numbers only, without a header row")
            if width is None:
                width = row.shape[1]
            elif row.shape[1] != width:
                raise DataError(f"line {number}: {row.shape[1]} columns where earlier lines have {width}",
                                source=self.source, fix="Every line must have the same number of columns")
        raise DataError(f"lines {first_line + 1}-{first_line + len(lines)} cannot be read as CSV numbers",
                        source=self.source, fix="CSV training data must be numbers only, without a header row")

    def finish(self, offset: int) -> None:
        pass


def _loadtxt(text: str) -> np.ndarray | None:
    """numpy's fast CSV parser over ``text`` (no comment character: '#' is data), or None if
    it fails or finds no rows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data": None below
        try:
            table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2, comments=None)
        except ValueError:
            return None
    return table if table.size else None


def _describe_bad_line(line: str) -> str:
    """Why one line is not a row of numbers: its first field that is not one, if any."""
    for field in line.split(","):
        if _loadtxt(field) is None:
            return f"non-numeric field {field.strip(BLANK)[:80]!r}"
    return f"cannot be read as comma-separated numbers: {line.strip(BLANK)[:80]!r}"
