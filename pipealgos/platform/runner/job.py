"""The CreateTrainingJob request, as a boto3 user writes it, checked and turned into a :class:`Job`.

``pipealgos run JOB.json`` takes the same keys and nesting as
``boto3.client("sagemaker").create_training_job(**request)``. Every problem is reported with
its JSON path (``$.InputDataConfig[1].DataSource.S3DataSource.S3Uri: ...``), all at once.

API keys that mean nothing on a local machine (``RoleArn``, ``VpcConfig``, ``Tags``,
``ResourceConfig.VolumeSizeInGB``, ...) are accepted and ignored, so a request written for
SageMaker runs unchanged; a key the API does not have is an error, since it is most likely a
typo. ``FastFile`` channels are downloaded like ``File`` channels (the code reading them is the
same). Not supported, with an error saying so: ``AugmentedManifestFile``, ``FileSystemDataSource``,
heterogeneous clusters (``InstanceGroups``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry import UnknownAlgorithm, get_algorithm

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
CHANNEL_PATTERN = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")
INPUT_MODES = ("File", "Pipe", "FastFile")

_TOP = {"TrainingJobName", "AlgorithmSpecification", "HyperParameters", "InputDataConfig", "OutputDataConfig",
        "ResourceConfig", "StoppingCondition", "CheckpointConfig", "Environment"}
_TOP_IGNORED = {"RoleArn", "VpcConfig", "Tags", "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption",
                "EnableManagedSpotTraining", "DebugHookConfig", "DebugRuleConfigurations", "TensorBoardOutputConfig",
                "ExperimentConfig", "ProfilerConfig", "ProfilerRuleConfigurations", "RetryStrategy",
                "RemoteDebugConfig", "InfraCheckConfig", "SessionChainingConfig"}
_ALGO = {"TrainingInputMode", "TrainingImage", "AlgorithmName"}
_ALGO_IGNORED = {"MetricDefinitions", "EnableSageMakerMetricsTimeSeries", "ContainerEntrypoint",
                 "ContainerArguments", "TrainingImageConfig"}
_CHANNEL = {"ChannelName", "DataSource", "ContentType", "CompressionType", "RecordWrapperType", "InputMode",
            "ShuffleConfig"}
_S3_SOURCE = {"S3DataType", "S3Uri", "S3DataDistributionType"}
_S3_SOURCE_IGNORED = {"InstanceGroupNames", "ModelAccessConfig", "HubAccessConfig"}


class JobSpecError(ValueError):
    """The request is malformed; ``problems`` lists ``(json_path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"the training job request has {len(problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class ChannelInput:
    """One ``InputDataConfig`` entry. ``input_mode`` is the channel's (or the job's default)."""

    name: str
    uri: str
    data_type: str = "S3Prefix"
    distribution: str = "FullyReplicated"
    input_mode: str = "File"
    content_type: str | None = None
    compression: str | None = None
    record_wrapper: str | None = None
    shuffle_seed: int | None = None

    @property
    def sharded(self) -> bool:
        return self.distribution == "ShardedByS3Key"

    @property
    def is_pipe(self) -> bool:
        return self.input_mode == "Pipe"


@dataclass(frozen=True)
class Job:
    name: str
    algorithm: str
    image: str
    input_mode: str
    hyperparameters: dict[str, str]
    channels: tuple[ChannelInput, ...]
    output_path: str
    instance_count: int = 1
    instance_type: str = "local"
    max_runtime: int | None = None
    checkpoint_uri: str | None = None
    checkpoint_local_path: str | None = None
    environment: tuple[tuple[str, str], ...] = ()

    @property
    def hosts(self) -> list[str]:
        """``algo-1 … algo-N`` sorted as SageMaker sorts them: lexicographically."""
        return sorted(f"algo-{i + 1}" for i in range(self.instance_count))


class _Checker:
    """Collects problems while walking the request."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def obj(self, value: Any, path: str, known: set[str], ignored: frozenset[str] | set[str] = frozenset(),
            required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"must be an object, got {type(value).__name__}")
            return {}
        for key in value:
            if key not in known and key not in ignored:
                self.fail(f"{path}.{key}", f"unknown field; valid fields here: {', '.join(sorted(known))}")
        for key in required:
            if key not in value:
                self.fail(f"{path}.{key}", "required field is missing")
        return value

    def text(self, parent: dict, key: str, path: str, choices: tuple[str, ...] | None = None,
             pattern: re.Pattern | None = None, default: str | None = None) -> str | None:
        if key not in parent:
            return default
        value = parent[key]
        where = f"{path}.{key}"
        if not isinstance(value, str) or not value:
            self.fail(where, f"must be a non-empty string, got {json.dumps(value)}")
            return default
        if choices is not None and value not in choices:
            self.fail(where, f"'{value}' is not one of {', '.join(choices)}")
            return default
        if pattern is not None and not pattern.match(value):
            self.fail(where, f"'{value}' does not match {pattern.pattern}")
            return default
        return value

    def integer(self, parent: dict, key: str, path: str, low: int, high: int | None = None,
                default: int | None = None) -> int | None:
        if key not in parent:
            return default
        value = parent[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            self.fail(f"{path}.{key}", f"must be an integer {bound}, got {json.dumps(value)}")
            return default
        return value

    def string_map(self, parent: dict, key: str, path: str, limit: int) -> dict[str, str]:
        value = parent.get(key, {})
        where = f"{path}.{key}"
        if not isinstance(value, dict):
            self.fail(where, "must be an object of string -> string")
            return {}
        if len(value) > limit:
            self.fail(where, f"has {len(value)} entries; the API allows at most {limit}")
        for name, item in value.items():
            if not isinstance(item, str):
                self.fail(f"{where}.{name}", f"must be a string (the API sends every value as a string), "
                                             f"got {json.dumps(item)}; write it as {json.dumps(str(item))}")
        return {k: v for k, v in value.items() if isinstance(v, str)}


def parse_job(request: Any) -> Job:
    """Check a CreateTrainingJob request (a parsed JSON object) and build the :class:`Job`."""
    c = _Checker()
    top = c.obj(request, "$", _TOP, _TOP_IGNORED, required=("TrainingJobName", "AlgorithmSpecification",
                                                            "OutputDataConfig", "ResourceConfig"))
    name = c.text(top, "TrainingJobName", "$", pattern=NAME_PATTERN) or "job"

    algo = c.obj(top.get("AlgorithmSpecification", {}), "$.AlgorithmSpecification", _ALGO, _ALGO_IGNORED)
    job_mode = c.text(algo, "TrainingInputMode", "$.AlgorithmSpecification", INPUT_MODES, default="File")
    image = c.text(algo, "TrainingImage", "$.AlgorithmSpecification") or c.text(
        algo, "AlgorithmName", "$.AlgorithmSpecification")
    algorithm = "?"
    if "TrainingImage" in algo and "AlgorithmName" in algo:
        c.fail("$.AlgorithmSpecification", "give TrainingImage or AlgorithmName, not both")
    elif image is None:
        c.fail("$.AlgorithmSpecification.TrainingImage", "required: an image such as '.../pca:1' or an algorithm name")
    else:
        try:
            algorithm = get_algorithm(image).name
        except UnknownAlgorithm as exc:
            key = "TrainingImage" if "TrainingImage" in algo else "AlgorithmName"
            c.fail(f"$.AlgorithmSpecification.{key}", str(exc))

    hyperparameters = c.string_map(top, "HyperParameters", "$", limit=100)
    channels = _parse_channels(c, top.get("InputDataConfig", []), job_mode or "File")

    out = c.obj(top.get("OutputDataConfig", {}), "$.OutputDataConfig", {"S3OutputPath"},
                {"KmsKeyId", "CompressionType"}, required=("S3OutputPath",))
    output_path = c.text(out, "S3OutputPath", "$.OutputDataConfig") or ""

    res = c.obj(top.get("ResourceConfig", {}), "$.ResourceConfig", {"InstanceCount", "InstanceType"},
                {"VolumeSizeInGB", "VolumeKmsKeyId", "KeepAlivePeriodInSeconds", "TrainingPlanArn"})
    if "InstanceGroups" in res:
        c.fail("$.ResourceConfig.InstanceGroups", "heterogeneous clusters are not supported; use InstanceCount")
    count = c.integer(res, "InstanceCount", "$.ResourceConfig", 1, 64, default=1)
    instance_type = c.text(res, "InstanceType", "$.ResourceConfig", default="local")

    stop = c.obj(top.get("StoppingCondition", {}), "$.StoppingCondition", {"MaxRuntimeInSeconds"},
                 {"MaxWaitTimeInSeconds", "MaxPendingTimeInSeconds"})
    max_runtime = c.integer(stop, "MaxRuntimeInSeconds", "$.StoppingCondition", 1)

    checkpoint_uri = checkpoint_local = None
    if "CheckpointConfig" in top:
        ckpt = c.obj(top["CheckpointConfig"], "$.CheckpointConfig", {"S3Uri", "LocalPath"}, required=("S3Uri",))
        checkpoint_uri = c.text(ckpt, "S3Uri", "$.CheckpointConfig")
        checkpoint_local = c.text(ckpt, "LocalPath", "$.CheckpointConfig")

    environment = c.string_map(top, "Environment", "$", limit=100)
    if c.problems:
        raise JobSpecError(c.problems)
    return Job(name, algorithm, image or "", job_mode or "File", hyperparameters, tuple(channels), output_path,
               count or 1, instance_type or "local", max_runtime, checkpoint_uri, checkpoint_local,
               tuple(sorted(environment.items())))


def _parse_channels(c: _Checker, value: Any, job_mode: str) -> list[ChannelInput]:
    if not isinstance(value, list):
        c.fail("$.InputDataConfig", "must be a list of channels")
        return []
    if len(value) > 20:
        c.fail("$.InputDataConfig", f"has {len(value)} channels; the API allows at most 20")
    channels, seen = [], set()
    for i, entry in enumerate(value):
        path = f"$.InputDataConfig[{i}]"
        ch = c.obj(entry, path, _CHANNEL, required=("ChannelName", "DataSource"))
        name = c.text(ch, "ChannelName", path, pattern=CHANNEL_PATTERN)
        if name in seen:
            c.fail(f"{path}.ChannelName", f"channel '{name}' is given twice")
        seen.add(name)
        source = c.obj(ch.get("DataSource", {}), f"{path}.DataSource", {"S3DataSource"})
        if "FileSystemDataSource" in source:
            c.fail(f"{path}.DataSource.FileSystemDataSource", "EFS/FSx sources are not supported; use S3DataSource "
                   "with an s3:// URI or a local path")
        spath = f"{path}.DataSource.S3DataSource"
        s3 = c.obj(source.get("S3DataSource", {}), spath, _S3_SOURCE, _S3_SOURCE_IGNORED,
                   required=("S3DataType", "S3Uri"))
        data_type = c.text(s3, "S3DataType", spath, ("S3Prefix", "ManifestFile", "AugmentedManifestFile"))
        if data_type == "AugmentedManifestFile":
            c.fail(f"{spath}.S3DataType", "AugmentedManifestFile is not supported by pipealgos; "
                   "use S3Prefix or ManifestFile")
        uri = c.text(s3, "S3Uri", spath)
        distribution = c.text(s3, "S3DataDistributionType", spath, ("FullyReplicated", "ShardedByS3Key"),
                              default="FullyReplicated")
        mode = c.text(ch, "InputMode", path, INPUT_MODES, default=job_mode)
        compression = c.text(ch, "CompressionType", path, ("None", "Gzip"))
        wrapper = c.text(ch, "RecordWrapperType", path, ("None", "RecordIO"))
        if mode != "Pipe":
            if compression == "Gzip":
                c.fail(f"{path}.CompressionType", f"Gzip applies to Pipe mode only (this channel is {mode}); "
                       "remove it or use InputMode Pipe")
            if wrapper == "RecordIO":
                c.fail(f"{path}.RecordWrapperType", f"RecordIO wrapping applies to Pipe mode only (this channel is "
                       f"{mode}); remove it or use InputMode Pipe")
        if mode == "FastFile" and data_type == "ManifestFile":
            c.fail(f"{path}.InputMode", "FastFile requires S3DataType S3Prefix")
        seed = None
        if "ShuffleConfig" in ch:
            shuffle = c.obj(ch["ShuffleConfig"], f"{path}.ShuffleConfig", {"Seed"}, required=("Seed",))
            seed = c.integer(shuffle, "Seed", f"{path}.ShuffleConfig", -(2**63))
        content_type = c.text(ch, "ContentType", path)
        if name and uri and data_type:
            channels.append(ChannelInput(name, uri, data_type, distribution or "FullyReplicated", mode or job_mode,
                                         content_type, compression, wrapper, seed))
    return channels


def load_job(path: Path) -> Job:
    """Read and check a JSON request file."""
    try:
        request = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise JobSpecError([("$", f"{path} is not valid JSON: {exc}")]) from None
    return parse_job(request)
