"""One host's ML root (the ``/opt/ml`` of a SageMaker container), with its config files.

The files are written in the shapes SageMaker writes (platform contract 1.3-1.6):

* ``hyperparameters.json``: the request's ``HyperParameters`` as given (all strings);
* ``inputdataconfig.json``: per channel ``ContentType`` (only when the request set one),
  ``TrainingInputMode``, ``S3DistributionType``, ``RecordWrapperType`` and, only when the
  request set it, ``CompressionType``;
* ``resourceconfig.json``: the full form with ``instance_groups`` and ``network_interface_name``
  ``eth0`` (the hosts find each other on loopback through ``PIPEALGOS_MASTER_*`` instead);
* ``checkpointconfig.json``: only with ``CheckpointConfig``; ``LocalPath`` is the request's,
  else this root's ``checkpoints/`` (standing in for ``/opt/ml/checkpoints``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import MLRoot
from .job import Job

GROUP_NAME = "homogeneousCluster"


def input_data_config(job: Job) -> dict[str, dict[str, str]]:
    config = {}
    for ch in job.channels:
        entry = {}
        if ch.content_type:
            entry["ContentType"] = ch.content_type
        entry["TrainingInputMode"] = ch.input_mode
        entry["S3DistributionType"] = ch.distribution
        entry["RecordWrapperType"] = ch.record_wrapper or "None"
        if ch.compression:
            entry["CompressionType"] = ch.compression
        config[ch.name] = entry
    return config


def resource_config(job: Job, host: str) -> dict:
    hosts = job.hosts
    return {
        "current_host": host,
        "current_instance_type": job.instance_type,
        "current_group_name": GROUP_NAME,
        "hosts": hosts,
        "instance_groups": [{"instance_group_name": GROUP_NAME, "instance_type": job.instance_type, "hosts": hosts}],
        "network_interface_name": "eth0",
    }


def checkpoint_local_path(job: Job, ml: MLRoot) -> Path | None:
    if job.checkpoint_uri is None:
        return None
    return Path(job.checkpoint_local_path) if job.checkpoint_local_path else ml.root / "checkpoints"


def lay_out_host(job: Job, host: str, root: Path) -> MLRoot:
    """Create ``root`` as host ``host``'s ML root and write its config files."""
    ml = MLRoot(root)
    for folder in (ml.config_dir, ml.data_dir, ml.model_dir, ml.output_data_dir):
        folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, data) -> None:
        (ml.config_dir / name).write_text(json.dumps(data, indent=2) + "\n")

    write("hyperparameters.json", job.hyperparameters)
    write("inputdataconfig.json", input_data_config(job))
    write("resourceconfig.json", resource_config(job, host))
    local = checkpoint_local_path(job, ml)
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)
        write("checkpointconfig.json", {"LocalPath": str(local), "S3Uri": job.checkpoint_uri})
    return ml
