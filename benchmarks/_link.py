"""A bandwidth-limited link on one machine: the S3 server as if it were remote.

Two ways, the first preferred:

* **Kernel shaping in a private network namespace.** :func:`run_in_private_namespace`
  re-runs a command under ``unshare -rn`` (a new user and network namespace: no root needed
  where unprivileged user namespaces are allowed) with its own loopback brought up. Inside,
  :func:`shape_source_port` caps the traffic *from* one TCP port (the S3 server's) with the
  kernel's HTB: ``htb default 0`` at the root (unclassified traffic passes unshaped), one
  class ``rate = ceil = the cap`` with a ``pfifo`` below it, and a ``u32`` filter on
  ``ip sport <port>``. Shaping all of ``lo`` would also throttle the server's own internal
  hops (SeaweedFS's S3 gateway talks to its filer and volume servers over loopback), so only
  the S3 port is shaped. There is no ``netem`` in this kernel: the link has a rate, no added
  latency.
* **A user-space token-bucket proxy** (:class:`TokenBucketProxy`) where namespaces are not
  available: it listens on another loopback port and relays to the server, passing the
  server's replies at the capped rate. It costs CPU on the same cores (reported).

The guard: :func:`shape_source_port` changes nothing unless the process is in a network
namespace of its own, never the machine's real loopback. PID 1's namespace is the reference
when it can be read; where it cannot (here ``/proc/1/ns/net`` is unreadable even to root),
the namespace the launcher recorded before unsharing (``PIPEALGOS_OUTER_NETNS``) is, and
without either the shaping is refused. In addition the namespace must hold no interface
but ``lo``, as a fresh one does. Only loopback addresses are used throughout.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

OUTER_NETNS_ENV = "PIPEALGOS_OUTER_NETNS"
MB = 1e6


class ShapingRefused(RuntimeError):
    """Shaping was asked for outside a private network namespace, or tc failed."""


def netns_of(pid: str = "self") -> str | None:
    """The network namespace of ``pid`` (``net:[inode]``), None when it cannot be read."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def interfaces() -> list[str]:
    """The network interfaces of this process's namespace (``/proc/self/net/dev`` is per
    namespace; ``/sys/class/net`` shows the namespace that mounted sysfs)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines)


def private_namespace_problem() -> str | None:
    """Why this process's network namespace must not be shaped; None when it is private."""
    own = netns_of()
    reference = netns_of("1") or os.environ.get(OUTER_NETNS_ENV)
    if own is None or reference is None:
        return ("the network namespace cannot be compared with the machine's (PID 1's is unreadable and "
                f"{OUTER_NETNS_ENV} is unset): run through run_in_private_namespace")
    if own == reference:
        return f"this process is in the machine's own network namespace ({own})"
    if interfaces() != ["lo"]:
        return f"the namespace holds interfaces besides lo ({', '.join(interfaces())}): not a fresh one"
    return None


def namespaces_problem() -> str | None:
    """Why :func:`run_in_private_namespace` cannot work here; None when it can."""
    for tool in ("unshare", "ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up && tc qdisc show dev lo"],
                           capture_output=True, text=True)
    if probe.returncode:
        return f"`unshare -rn` failed: {probe.stderr.strip() or probe.returncode}"
    return None


def run_in_private_namespace(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``argv`` in a new user + network namespace with loopback up; its exit status.

    The current namespace is recorded in ``PIPEALGOS_OUTER_NETNS`` for the guard."""
    child_env = dict(os.environ if env is None else env)
    child_env[OUTER_NETNS_ENV] = netns_of() or ""
    script = 'ip link set lo up && exec "$@"'
    return subprocess.run(["unshare", "-rn", "sh", "-c", script, "sh", *argv], env=child_env).returncode


def _tc(*args: str) -> None:
    done = subprocess.run(["tc", *args], capture_output=True, text=True)
    if done.returncode:
        raise ShapingRefused(f"tc {' '.join(args)} failed: {done.stderr.strip()}")


def shape_source_port(port: int, megabytes_per_s: float) -> None:
    """Cap TCP traffic from loopback port ``port`` at ``megabytes_per_s`` (10^6 bytes/s).

    Refused (:class:`ShapingRefused`) outside a private namespace: see the module docstring.
    The burst is 64 KiB + a little, one loopback packet (lo's MTU), so a full-size packet can
    always leave; smaller bursts made HTB undershoot its rate on lo."""
    problem = private_namespace_problem()
    if problem is not None:
        raise ShapingRefused(f"refusing to shape loopback: {problem}")
    rate = f"{megabytes_per_s * 8:g}mbit"
    _tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "0")
    _tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate,
        "burst", "68k", "cburst", "68k")
    _tc("qdisc", "add", "dev", "lo", "parent", "1:1", "handle", "10:", "pfifo", "limit", "1000")
    _tc("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
        "match", "ip", "sport", str(port), "0xffff", "flowid", "1:1")


def shaped_bytes() -> int:
    """Bytes the shaped class has sent so far (``tc -s class``), 0 if there is none."""
    text = subprocess.run(["tc", "-s", "class", "show", "dev", "lo", "classid", "1:1"], capture_output=True,
                          text=True).stdout
    words = text.split()
    return int(words[words.index("Sent") + 1]) if "Sent" in words else 0


class TokenBucket:
    """Shared by every connection of a proxy: ``take(n)`` returns when ``n`` bytes may pass at
    ``rate`` bytes/s. Unused allowance is kept up to ``burst`` bytes, so a relay thread that
    woke late (a loaded machine) catches up instead of losing its share; the bucket starts
    empty, so a short transfer is not flattered by an initial burst."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = 0.0
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:  # one taker at a time: the bucket's order is the link's order
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            debt = -self._tokens / self.rate
            if debt > 0:
                time.sleep(debt)


class TokenBucketProxy:
    """Relays ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``, passing the target's replies
    at ``megabytes_per_s`` (requests go up unshaped, as on a download link). ``cpu_seconds``
    is the CPU its relay threads have used so far."""

    CHUNK = 64 << 10

    def __init__(self, target_port: int, megabytes_per_s: float) -> None:
        self.target_port = target_port
        self.bucket = TokenBucket(megabytes_per_s * MB, max(self.CHUNK, megabytes_per_s * MB * 0.05))  # 50 ms
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._cpu: dict[int, float] = {}  # relay thread -> its CPU seconds so far
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    @property
    def cpu_seconds(self) -> float:
        return sum(list(self._cpu.values()))

    def _pump(self, source: socket.socket, sink: socket.socket, shaped: bool) -> None:
        me = threading.get_ident()
        try:
            while data := source.recv(self.CHUNK):
                if shaped:
                    self.bucket.take(len(data))
                sink.sendall(data)
                self._cpu[me] = time.thread_time()  # kept-alive connections never end: count as we go
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            source.close()
            self._cpu[me] = time.thread_time()

    def close(self) -> None:
        self._closed = True
        self.listener.close()


def measure_transfer(megabytes_per_s: float, nbytes: int, how: str) -> tuple[float, float]:
    """Send ``nbytes`` from a loopback server to a client through a link capped at
    ``megabytes_per_s``, ``how`` = ``"tc"`` (:func:`shape_source_port`, in a private namespace)
    or ``"proxy"`` (:class:`TokenBucketProxy`). Returns (MB/s received, CPU seconds the proxy
    used or 0). The check that the mechanism still holds its cap."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    payload = b"\x00" * (1 << 20)

    def send() -> None:
        conn, _ = server.accept()
        with conn:
            for _ in range(nbytes // len(payload)):
                conn.sendall(payload)

    threading.Thread(target=send, daemon=True).start()
    proxy = None
    if how == "tc":
        shape_source_port(port, megabytes_per_s)
    else:
        proxy = TokenBucketProxy(port, megabytes_per_s)
        port = proxy.port
    received = 0
    with socket.create_connection(("127.0.0.1", port)) as client:
        started = time.monotonic()
        while chunk := client.recv(1 << 20):
            received += len(chunk)
        took = time.monotonic() - started
    server.close()
    if proxy is not None:
        proxy.close()
    if received != nbytes // len(payload) * len(payload):
        raise RuntimeError(f"received {received} bytes of {nbytes}")
    return received / MB / took, proxy.cpu_seconds if proxy else 0.0
