"""`make bench`: run every benchmark in this folder, one after another, in its own process.

Each benchmark prints its figures with ratios against baselines measured in the same run
and records them in benchmarks/RESULTS.md. A benchmark that exits non-zero (for example
because a fast path was silently not taken) makes `make bench` fail.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("*.py")):
        if script.name in ("run_all.py", "soak.py") or script.name.startswith("_"):  # `make soak` runs the soak
            continue
        print(f"\n===== {script.name} =====", flush=True)
        if subprocess.call([sys.executable, str(script)]) != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
