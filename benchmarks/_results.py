"""What the benchmarks share: recording a section of RESULTS.md, and describing the machine.

Imported as a sibling module (``from _results import ...``): each benchmark runs as
``python benchmarks/X.py``, which puts this folder on ``sys.path``. ``run_all.py`` skips files
whose names start with ``_``, so this one is not run as a benchmark.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def record_section(name: str, text: str, title: str | None = None, path: Path = RESULTS) -> None:
    """Replace (or append) the section of ``path`` between ``<!-- name:begin -->`` and ``<!-- name:end -->``.

    The section holds ``title`` (when given) and a blank line, then ``text`` without trailing
    whitespace; the rest of the file is left alone. A file that does not exist starts as
    ``# Benchmark results``.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    body = text.rstrip() if title is None else f"{title}\n\n{text.rstrip()}"
    block = f"{begin}\n{body}\n{end}"
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    start = current.find(begin)
    stop = current.find(end, start) if start >= 0 else -1
    if stop >= 0:
        updated = current[:start] + block + current[stop + len(end):]
    else:
        updated = current.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(updated)


def machine(*extras: str) -> str:
    """``<CPU model>, <n> cores; Python <version>, numpy <version>`` followed by ``, <extra>`` for each extra."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return ", ".join([f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy {np.__version__}",
                      *extras])


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a gunicorn master and its workers), from Linux /proc."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    return pids
