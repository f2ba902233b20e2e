"""The ML root (``/opt/ml``) and one reader per file SageMaker writes into ``input/config/``.

Nothing here touches the file system at import time; every reader takes the ML root.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ML_ROOT = "/opt/ml"


class ConfigError(ValueError):
    """A configuration file is missing or malformed."""


@dataclass(frozen=True)
class MLRoot:
    """Paths of the SageMaker container layout under one root directory."""

    root: Path

    @classmethod
    def resolve(cls, explicit: str | os.PathLike | None = None) -> "MLRoot":
        """``--ml-root`` wins, then ``PIPEALGOS_ML_ROOT``, then ``SAGEMAKER_BASE_DIR``, then /opt/ml."""
        value = explicit or os.environ.get("PIPEALGOS_ML_ROOT") or os.environ.get("SAGEMAKER_BASE_DIR")
        return cls(Path(value or DEFAULT_ML_ROOT))

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "input" / "data"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"


def _load_json(path: Path, required: bool):
    if not path.exists() and not path.is_symlink():
        if required:
            raise ConfigError(f"{path} is missing: the platform writes it before `train` starts")
        return None
    if not path.is_file():
        raise ConfigError(f"{path} is not a file: the platform writes each config as a JSON file")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}): write it as UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror})") from None


def read_hyperparameters(ml: MLRoot) -> dict[str, str]:
    """``hyperparameters.json``: a flat object of strings, e.g. ``{"feature_dim": "50"}``.

    Missing file: no hyperparameters (the schema then reports the required ones)."""
    data = _load_json(ml.config_dir / "hyperparameters.json", required=False) or {}
    if not isinstance(data, dict):
        raise ConfigError("hyperparameters.json must hold a JSON object of name -> value")
    return {str(k): v if isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)
            for k, v in data.items()}


@dataclass(frozen=True)
class ChannelConfig:
    """One entry of ``inputdataconfig.json``.

    Shape: ``{"train": {"ContentType": "text/csv;label_size=1", "TrainingInputMode": "Pipe",
    "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None", "CompressionType": "Gzip"}}``;
    SageMaker local mode writes only ``TrainingInputMode``, so every other key is optional;
    ``distribution`` is None when the file states none.
    """

    name: str
    input_mode: str = "File"
    content_type: str | None = None
    distribution: str | None = None
    record_wrapper: str = "None"
    compression: str = "None"


def read_input_data_config(ml: MLRoot) -> dict[str, ChannelConfig]:
    data = _load_json(ml.config_dir / "inputdataconfig.json", required=False)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("inputdataconfig.json must hold a JSON object keyed by channel name")
    channels = {}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"inputdataconfig.json: channel '{name}' must be an object")
        for key, value in entry.items():
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"inputdataconfig.json: channel '{name}' has {key}={json.dumps(value)}; "
                                  f"{key} must be a string (e.g. \"ContentType\": \"text/csv\")")
        channels[name] = ChannelConfig(
            name=name,
            input_mode=entry.get("TrainingInputMode") or "File",
            content_type=entry.get("ContentType") or None,
            distribution=entry.get("S3DistributionType") or None,
            record_wrapper=entry.get("RecordWrapperType") or "None",
            compression=entry.get("CompressionType") or "None",
        )
    return channels


@dataclass(frozen=True)
class ResourceConfig:
    """``resourceconfig.json``: ``{"current_host": "algo-2", "hosts": ["algo-1", "algo-2"],
    "network_interface_name": "eth0", ...}``. Only ``current_host`` and ``hosts`` are guaranteed;
    without the file the job is a single host ``algo-1``."""

    current_host: str = "algo-1"
    hosts: tuple[str, ...] = ("algo-1",)
    network_interface_name: str | None = None
    instance_type: str | None = None

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def is_leader(self) -> bool:
        return self.current_host == self.hosts[0]


def read_resource_config(ml: MLRoot) -> ResourceConfig:
    data = _load_json(ml.config_dir / "resourceconfig.json", required=False)
    if data is None:
        return ResourceConfig()
    try:
        hosts = tuple(data["hosts"])
        current = data["current_host"]
    except (KeyError, TypeError):
        raise ConfigError("resourceconfig.json needs 'current_host' and 'hosts'") from None
    if current not in hosts:
        raise ConfigError(f"resourceconfig.json: current_host '{current}' is not among hosts {list(hosts)}")
    return ResourceConfig(current, hosts, data.get("network_interface_name"), data.get("current_instance_type"))


@dataclass(frozen=True)
class CheckpointConfig:
    """``checkpointconfig.json`` (present only when the job set CheckpointConfig):
    ``{"LocalPath": "/opt/ml/checkpoints", "S3Uri": "s3://..."}``."""

    local_path: Path
    s3_uri: str | None = None


def read_checkpoint_config(ml: MLRoot) -> CheckpointConfig | None:
    data = _load_json(ml.config_dir / "checkpointconfig.json", required=False)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError("checkpointconfig.json must hold a JSON object")
    return CheckpointConfig(Path(data.get("LocalPath") or ml.root / "checkpoints"), data.get("S3Uri"))
