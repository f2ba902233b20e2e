"""The CreateTrainingJob request, as a boto3 user writes it, checked and turned into a :class:`Job`.

``pipealgos run JOB.json`` takes the same keys and nesting as
``boto3.client("sagemaker").create_training_job(**request)``. Every problem is reported with
its JSON path (``$.InputDataConfig[1].DataSource.S3DataSource.S3Uri: ...``), all at once.

Two layers of checks:

* The request's *shape* is checked against botocore's own SageMaker service model (the
  ``CreateTrainingJobRequest`` input shape), exactly as boto3 would before sending it: unknown
  keys (most likely typos), missing required keys, wrong types, and the model's enums, patterns
  and length/range bounds. Keys that mean nothing on a local machine (``RoleArn``,
  ``VpcConfig``, ``Tags``, ``ResourceConfig.VolumeSizeInGB``, ...) are therefore accepted and
  ignored, so a request written for SageMaker runs unchanged. Two local exceptions:
  ``RoleArn`` may be left out, and ``S3Uri`` / ``S3OutputPath`` may be local paths or
  ``file://`` URIs (their ``s3://`` pattern is not applied).
* *Local rules* by hand: which algorithm runs (:func:`resolve_algorithm`), its
  hyperparameters against the algorithm's schema (so a typo fails before any host starts),
  channel names SageMaker would refuse (``.``/``..``) or that are given twice, and what the
  runner does not support, each with an error saying so: ``AugmentedManifestFile``,
  ``FileSystemDataSource`` / ``DatasetSource``, heterogeneous clusters (``InstanceGroups``),
  ``Gzip`` / ``RecordIO`` wrapping outside Pipe mode. ``FastFile`` channels are downloaded
  like ``File`` channels (the code reading them is the same).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hyperparameters import HyperparameterError
from ..registry import UnknownAlgorithm, get_algorithm

MAX_HOSTS = 64
GENERIC_IMAGE = "pipealgos"
ALGORITHM_ENV = "PIPEALGOS_ALGORITHM"
# Required by the API, meaningless here: a local request may leave them out.
LOCALLY_OPTIONAL = {"$.RoleArn"}
# Members whose API pattern demands s3:// but which may be local paths here (ModelDataUrl: the
# CreateModel request `pipealgos transform` reads beside a transform job).
LOCAL_PATH_MEMBERS = {"S3Uri", "S3OutputPath", "ModelDataUrl"}
_TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "dict": "an object", "list": "a list"}


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


# -- the shape, from botocore's service model ------------------------------------------------
@functools.cache
def request_shape(operation: str = "CreateTrainingJob"):
    """botocore's input shape of a SageMaker operation, ``CreateTrainingJobRequest`` by default
    (loaded once per operation; about 0.1 s)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return model.operation_model(operation).input_shape


def _describe_type(valid_types: list[str]) -> str:
    names = [t.split("'")[1] if "'" in t else t for t in valid_types]
    return " or ".join(_TYPE_WORDS.get(name, name) for name in names)


def _validator_problem(kind: str, name: str, info: dict) -> tuple[str, str] | None:
    """One of botocore ParamValidator's errors as (JSON path, message); None if locally fine."""
    path = "$" + name
    if kind == "missing required field":
        path = f"{path}.{info['required_name']}"
        return None if path in LOCALLY_OPTIONAL else (path, "required field is missing")
    if kind == "unknown field":
        return f"{path}.{info['unknown_param']}", f"unknown field; valid fields here: {', '.join(info['valid_names'])}"
    if kind == "invalid type":
        value = info["param"]
        message = f"must be {_describe_type(info['valid_types'])}, got {json.dumps(value)}"
        if "<class 'str'>" in info["valid_types"] and isinstance(value, (int, float, bool)):
            message += f"; the API sends every value as a string: write it as {json.dumps(str(value))}"
        return path, message
    if kind == "invalid range":
        return path, f"must be >= {info['min_allowed']}, got {json.dumps(info['param'])}"
    if kind == "invalid length":
        return path, f"must have at least {info['min_allowed']} item(s)/character(s), got {len(info['param'])}"
    return path, f"{kind}: {info}"


def _constraint_problems(value: Any, shape, path: str) -> list[tuple[str, str]]:
    """What ParamValidator leaves out: the model's enums, patterns and upper bounds.

    Walks only values of the right type (ParamValidator reports the others)."""
    problems: list[tuple[str, str]] = []
    meta = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                problems += _constraint_problems(item, shape.members[key], f"{path}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            problems.append((path, f"has {len(value)} entries; the API allows at most {meta['max']}"))
        for i, item in enumerate(value):
            problems += _constraint_problems(item, shape.member, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            problems.append((path, f"has {len(value)} entries; the API allows at most {meta['max']}"))
        for key, item in value.items():
            problems += _constraint_problems(item, shape.value, f"{path}.{key}")
    elif shape.type_name == "string" and isinstance(value, str):
        problems += _string_problems(value, shape, path)
    elif shape.type_name in ("integer", "long") and isinstance(value, int) and "max" in meta and value > meta["max"]:
        problems.append((path, f"must be <= {meta['max']}, got {value}"))
    return problems


def _string_problems(value: str, shape, path: str) -> list[tuple[str, str]]:
    meta = shape.metadata
    if shape.enum and value not in shape.enum:
        return [(path, f"'{value}' is not one of {', '.join(shape.enum)}")]
    if "max" in meta and len(value) > meta["max"]:
        return [(path, f"is {len(value)} characters long; the API allows at most {meta['max']}")]
    member = path.rsplit(".", 1)[-1]
    pattern = _compiled(meta.get("pattern"))
    if pattern is not None and member not in LOCAL_PATH_MEMBERS and not pattern.fullmatch(value):
        return [(path, f"'{value}' does not match the API's pattern {pattern.pattern}")]
    return []


@functools.cache
def _compiled(pattern: str | None) -> re.Pattern | None:
    """The model's (Java) regex in Python, or None when it has none or Python cannot read it."""
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error:
        return None


def shape_problems(request: Any, operation: str = "CreateTrainingJob") -> list[tuple[str, str]]:
    """Everything wrong with the request's shape according to botocore's SageMaker model
    (``operation``'s input shape: CreateTrainingJob, or CreateTransformJob / CreateModel for
    ``pipealgos transform``)."""
    from botocore.validate import ParamValidator

    if not isinstance(request, dict):
        return [("$", f"must be an object, got {type(request).__name__}")]
    shape = request_shape(operation)
    report = ParamValidator().validate(request, shape)
    problems = [_validator_problem(kind, name, info) for kind, name, info in report._errors]
    return [p for p in problems if p is not None] + _constraint_problems(request, shape, "$")


# -- the local rules ------------------------------------------------------------------------
def _get(parent: Any, key: str, kind: type, default=None):
    """``parent[key]`` when it is a ``kind`` (the shape check reported it otherwise)."""
    value = parent.get(key) if isinstance(parent, dict) else None
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        return default  # bool is an int to Python, not to the API
    return value


def _image_parts(image: str) -> tuple[str, str | None]:
    """(repository name, tag) of an image URI: ``1.dkr.ecr.r.amazonaws.com/pca:1`` -> (pca, 1);
    a registry port (``localhost:5000/x``) or a ``@sha256:`` digest is not a tag."""
    last = image.rsplit("/", 1)[-1].split("@", 1)[0]
    repository, _, tag = last.partition(":")
    return repository.lower(), tag or None


def resolve_algorithm(spec: dict, environment: dict[str, str]) -> tuple[str, str]:
    """(algorithm name, JSON path it came from) for ``AlgorithmSpecification``.

    * ``AlgorithmName: pca`` (or an alias);
    * ``TrainingImage`` naming an algorithm: ``.../pca:1``, ``pipealgos/kmeans:1``, ``pca``;
    * our generic image ``pipealgos[:tag]`` (any registry): ``Environment.PIPEALGOS_ALGORITHM``
      when set (what ``train`` in the image reads), else the tag (``pipealgos:pca``, the
      per-algorithm tags the README builds).

    An image naming one algorithm and ``Environment.PIPEALGOS_ALGORITHM`` another is refused,
    since the two would disagree on which algorithm SageMaker runs. Raises ValueError."""
    if "AlgorithmName" in spec:
        return get_algorithm(spec["AlgorithmName"]).name, "$.AlgorithmSpecification.AlgorithmName"
    path = "$.AlgorithmSpecification.TrainingImage"
    repository, tag = _image_parts(spec["TrainingImage"])
    chosen = environment.get(ALGORITHM_ENV)
    if repository == GENERIC_IMAGE:
        if chosen:
            return get_algorithm(chosen).name, f"$.Environment.{ALGORITHM_ENV}"
        try:
            return get_algorithm(tag or "").name, path
        except UnknownAlgorithm:
            named = f"its tag '{tag}' is not an algorithm" if tag else "it has no tag"
            raise UnknownAlgorithm(f"the generic image '{spec['TrainingImage']}' needs an algorithm and {named}: set "
                                   f"Environment.{ALGORITHM_ENV} (e.g. \"pca\") or use a tag such as pipealgos:pca"
                                   ) from None
    name = get_algorithm(repository).name
    if chosen and get_algorithm(chosen).name != name:
        raise UnknownAlgorithm(f"the image names {name} but Environment.{ALGORITHM_ENV} is '{chosen}': "
                               f"drop one of them, or use the generic image pipealgos with {ALGORITHM_ENV}")
    return name, path


class _Checker:
    """Collects the local rules' problems while the :class:`Job` is built."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append((path, message))


def _algorithm(c: _Checker, top: dict, environment: dict[str, str]) -> tuple[str, str]:
    """(algorithm name, image) of the request; "?" when it cannot be told."""
    spec = top.get("AlgorithmSpecification")
    if not isinstance(spec, dict):
        if spec is None:
            c.fail("$.AlgorithmSpecification", "required field is missing: it names the algorithm")
        return "?", ""
    image = _get(spec, "TrainingImage", str) or _get(spec, "AlgorithmName", str) or ""
    if "TrainingImage" in spec and "AlgorithmName" in spec:
        c.fail("$.AlgorithmSpecification", "give TrainingImage or AlgorithmName, not both")
    elif not image:
        c.fail("$.AlgorithmSpecification.TrainingImage",
               "required: an image such as '.../pca:1' or 'pipealgos:pca', or an AlgorithmName")
    else:
        try:
            return resolve_algorithm(spec, environment)[0], image
        except UnknownAlgorithm as exc:
            key = "TrainingImage" if "TrainingImage" in spec else "AlgorithmName"
            c.fail(f"$.AlgorithmSpecification.{key}", str(exc))
    return "?", image


def _check_hyperparameters(c: _Checker, algorithm: str, hyperparameters: Any) -> None:
    """The algorithm's schema, run here so that a typo fails before any host starts."""
    if algorithm == "?" or not isinstance(hyperparameters, dict) or not all(
            isinstance(v, str) for v in hyperparameters.values()):
        return  # the algorithm or the strings are already reported
    try:
        get_algorithm(algorithm).schema.parse(hyperparameters)
    except HyperparameterError as exc:
        c.fail("$.HyperParameters", str(exc))


def parse_job(request: Any) -> Job:
    """Check a CreateTrainingJob request (a parsed JSON object) and build the :class:`Job`."""
    shape = shape_problems(request)
    top = request if isinstance(request, dict) else {}
    c = _Checker()
    environment = {k: v for k, v in _get(top, "Environment", dict, {}).items() if isinstance(v, str)}
    algorithm, image = _algorithm(c, top, environment)
    hyperparameters = {k: v for k, v in _get(top, "HyperParameters", dict, {}).items() if isinstance(v, str)}
    _check_hyperparameters(c, algorithm, top.get("HyperParameters", {}))
    algo = _get(top, "AlgorithmSpecification", dict, {})
    job_mode = _get(algo, "TrainingInputMode", str, "File")
    channels = _parse_channels(c, _get(top, "InputDataConfig", list, []), job_mode)

    output_path = _get(_get(top, "OutputDataConfig", dict, {}), "S3OutputPath", str, "")
    res = _get(top, "ResourceConfig", dict, {})
    if "InstanceGroups" in res:
        c.fail("$.ResourceConfig.InstanceGroups", "heterogeneous clusters are not supported; use InstanceCount")
    count = _get(res, "InstanceCount", int, 1)
    if not 1 <= count <= MAX_HOSTS:  # the API's minimum is 0 (for InstanceGroups requests)
        c.fail("$.ResourceConfig.InstanceCount", f"must be an integer 1..{MAX_HOSTS} (hosts on this machine), "
                                                 f"got {count}")
    max_runtime = _get(_get(top, "StoppingCondition", dict, {}), "MaxRuntimeInSeconds", int)
    ckpt = _get(top, "CheckpointConfig", dict, {})
    problems = _merge(shape, c.problems)
    if problems:
        raise JobSpecError(problems)
    return Job(top["TrainingJobName"], algorithm, image, job_mode, hyperparameters, tuple(channels), output_path,
               count, _get(res, "InstanceType", str, "local"), max_runtime, _get(ckpt, "S3Uri", str),
               _get(ckpt, "LocalPath", str), tuple(sorted(environment.items())))


def _merge(shape: list[tuple[str, str]], local: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Both lists, without a local problem at a path the shape check already reported."""
    reported = {path for path, _ in shape}
    return shape + [(path, message) for path, message in local if path not in reported]


def _parse_channels(c: _Checker, entries: list, job_mode: str) -> list[ChannelInput]:
    channels, seen = [], set()
    for i, entry in enumerate(entries):
        channel = _parse_channel(c, entry, f"$.InputDataConfig[{i}]", job_mode)
        if channel is None:
            continue
        if channel.name in seen:
            c.fail(f"$.InputDataConfig[{i}].ChannelName", f"channel '{channel.name}' is given twice")
        seen.add(channel.name)
        channels.append(channel)
    return channels


def _parse_channel(c: _Checker, ch: Any, path: str, job_mode: str) -> ChannelInput | None:
    if not isinstance(ch, dict):
        return None
    name = _get(ch, "ChannelName", str)
    if name in (".", ".."):
        # The API's pattern admits them, SageMaker refuses them: as a folder name under
        # input/data/ they would put the channel's objects outside its own folder.
        c.fail(f"{path}.ChannelName", f"'{name}' is not a valid channel name: it would be a folder outside "
                                      "input/data/; use letters, digits, '.', '-' and '_'")
    source = _get(ch, "DataSource", dict, {})
    for unsupported in ("FileSystemDataSource", "DatasetSource"):
        if unsupported in source:
            c.fail(f"{path}.DataSource.{unsupported}", "only S3DataSource is supported; use S3DataSource with an "
                                                       "s3:// URI or a local path")
    spath = f"{path}.DataSource.S3DataSource"
    s3 = _get(source, "S3DataSource", dict, {})
    data_type = _get(s3, "S3DataType", str)
    if data_type == "AugmentedManifestFile":
        c.fail(f"{spath}.S3DataType", "AugmentedManifestFile is not supported by pipealgos; use S3Prefix or "
                                      "ManifestFile")
    mode = _get(ch, "InputMode", str, job_mode)
    compression = _get(ch, "CompressionType", str)
    wrapper = _get(ch, "RecordWrapperType", str)
    if mode != "Pipe":
        if compression == "Gzip":
            c.fail(f"{path}.CompressionType", f"Gzip applies to Pipe mode only (this channel is {mode}); "
                   "remove it or use InputMode Pipe")
        if wrapper == "RecordIO":
            c.fail(f"{path}.RecordWrapperType", f"RecordIO wrapping applies to Pipe mode only (this channel is "
                   f"{mode}); remove it or use InputMode Pipe")
    if mode == "FastFile" and data_type == "ManifestFile":
        c.fail(f"{path}.InputMode", "FastFile requires S3DataType S3Prefix")
    uri = _get(s3, "S3Uri", str)
    if not (name and uri and data_type):
        return None
    return ChannelInput(name, uri, data_type, _get(s3, "S3DataDistributionType", str, "FullyReplicated"), mode,
                        _get(ch, "ContentType", str), compression, wrapper,
                        _get(_get(ch, "ShuffleConfig", dict, {}), "Seed", int))


def load_job(path: Path) -> Job:
    """Read and check a JSON request file (UTF-8, as JSON files are)."""
    data = Path(path).read_bytes()
    try:
        request = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise JobSpecError([("$", f"{path} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}): "
                                  "save the JSON file as UTF-8")]) from None
    except json.JSONDecodeError as exc:
        raise JobSpecError([("$", f"{path} is not valid JSON: {exc}")]) from None
    return parse_job(request)
