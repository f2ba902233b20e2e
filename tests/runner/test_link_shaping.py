"""The bandwidth-limited link of ``benchmarks/pipe_vs_file.py`` (``benchmarks/_link.py``): the
kernel shaping in a private network namespace and the token-bucket proxy each hold their cap
within 10% on a real loopback transfer, and the shaping refuses the machine's own loopback.
Run by ``make test`` so the benchmark's mechanism cannot rot unnoticed (~3 s)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _link  # noqa: E402

CAP_MB_S = 40.0
NBYTES = 16 << 20  # 0.4 s at the cap


def loopback_qdisc() -> str:
    return subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True).stdout


@pytest.mark.slow
def test_kernel_shaping_in_a_private_namespace_holds_the_cap():
    problem = _link.namespaces_problem()
    if problem is not None:
        pytest.skip(f"no private network namespace here: {problem}")  # the proxy test still runs
    before = loopback_qdisc()
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import _link; "
            f"rate, _ = _link.measure_transfer({CAP_MB_S}, {NBYTES}, 'tc'); print(rate, _link.shaped_bytes())")
    out = subprocess.run(["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                          sys.executable, "-c", code, str(BENCHMARKS)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, _link.OUTER_NETNS_ENV: _link.netns_of()})
    assert out.returncode == 0, out.stderr
    rate, shaped = out.stdout.split()
    assert abs(float(rate) / CAP_MB_S - 1) <= 0.10, f"{float(rate):.1f} MB/s through a {CAP_MB_S:g} MB/s cap"
    assert int(shaped) >= NBYTES  # the bytes really went through the shaped class
    assert loopback_qdisc() == before  # the machine's loopback was never touched


def test_shaping_is_refused_in_the_machines_own_namespace(monkeypatch):
    monkeypatch.setenv(_link.OUTER_NETNS_ENV, _link.netns_of())  # as a launcher that did not unshare
    before = loopback_qdisc()
    with pytest.raises(_link.ShapingRefused, match="machine's own network namespace"):
        _link.shape_source_port(9, CAP_MB_S)
    monkeypatch.delenv(_link.OUTER_NETNS_ENV)
    if _link.netns_of("1") is None:  # nothing to compare with: refused too
        with pytest.raises(_link.ShapingRefused, match="cannot be compared"):
            _link.shape_source_port(9, CAP_MB_S)
    assert loopback_qdisc() == before


@pytest.mark.slow
def test_token_bucket_proxy_holds_the_cap():
    rate, cpu = _link.measure_transfer(CAP_MB_S, NBYTES, "proxy")
    assert abs(rate / CAP_MB_S - 1) <= 0.10, f"{rate:.1f} MB/s through a {CAP_MB_S:g} MB/s cap"
    assert cpu > 0
