"""The one error type of the IO layer: bad data, named by where it is."""

from __future__ import annotations


class DataError(ValueError):
    """Input data that cannot be read, with the place it was found.

    ``source`` is the file or FIFO (or a description such as ``"request body"``),
    ``offset`` the byte offset inside it and ``record`` the 0-based record (or CSV line)
    index. ``str()`` gives one readable sentence including all known parts and the fix.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        offset: int | None = None,
        record: int | None = None,
        fix: str | None = None,
        channel: str | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.offset = offset
        self.record = record
        self.fix = fix
        self.channel = channel
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.channel is not None:
            where.append(f"channel '{self.channel}'")
        if self.source is not None:
            where.append(str(self.source))
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.offset is not None:
            where.append(f"byte offset {self.offset}")
        text = self.problem
        if where:
            text = f"{', '.join(where)}: {text}"
        if self.fix:
            text = f"{text}. {self.fix}"
        return text

    def located(self, **where) -> "DataError":
        """Return a copy with missing location parts filled in (known parts win)."""
        parts = {
            "source": self.source,
            "offset": self.offset,
            "record": self.record,
            "fix": self.fix,
            "channel": self.channel,
        }
        for key, value in where.items():
            if parts.get(key) is None:
                parts[key] = value
        return DataError(self.problem, **parts)
