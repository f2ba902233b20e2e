"""torch.distributed from ``resourceconfig.json``: rank = position in ``hosts``, master = ``hosts[0]``.

gloo on CPU, NCCL on GPU. ``PIPEALGOS_MASTER_ADDR`` / ``PIPEALGOS_MASTER_PORT`` override the
master's address and port (the local runner points every host at loopback); on SageMaker the
host names resolve on the job network. Collectives time out after
``PIPEALGOS_COLLECTIVE_TIMEOUT`` seconds (default 45), so a dead peer fails the others
instead of hanging them.

The process group must be gone before the interpreter shuts down: gloo's threads still
running then can end a finished host with SIGABRT ("terminate called without an active
exception"). :func:`shutdown_distributed` frees it, once nothing else holds it. torch's
``torch.distributed.nn.functional`` binds ``group.WORLD`` as a default argument when it is
imported, and ``torch.optim`` imports it (through ``torch._dynamo``), so a job that builds an
optimizer after the group exists would hold the group until exit. It is imported here, before
the group exists, so its defaults hold no group.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional  # noqa: F401  (before any group exists: see the module docstring)

from .config import ResourceConfig

DEFAULT_PORT = 29577


@dataclass(frozen=True)
class Topology:
    rank: int
    world_size: int
    host: str
    hosts: tuple[str, ...]

    @property
    def is_leader(self) -> bool:
        return self.rank == 0


def topology(resources: ResourceConfig) -> Topology:
    return Topology(resources.rank, len(resources.hosts), resources.current_host, resources.hosts)


def init_distributed(resources: ResourceConfig, device: torch.device) -> Topology:
    """Join the process group when the job has several hosts; a no-op for one host."""
    topo = topology(resources)
    if topo.world_size == 1:
        return topo
    master = os.environ.get("PIPEALGOS_MASTER_ADDR", resources.hosts[0])
    port = int(os.environ.get("PIPEALGOS_MASTER_PORT", DEFAULT_PORT))
    interface = resources.network_interface_name
    if master in ("127.0.0.1", "localhost"):
        interface = "lo"
    if interface:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", interface)
    timeout = datetime.timedelta(seconds=float(os.environ.get("PIPEALGOS_COLLECTIVE_TIMEOUT", "45")))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{master}:{port}", rank=topo.rank,
                            world_size=topo.world_size, timeout=timeout)
    return topo


def wait_for_all_hosts() -> None:
    """Return once every host has finished training (a no-op for one host), so no host
    closes its connections while a peer is still inside a collective. Called before the
    leader saves the model, so a slow save never counts against the collective timeout."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown_distributed() -> None:
    """Free the process group (and gloo's threads) after a job that succeeded on this host."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
