"""The CreateTransformJob request (and the model it names), checked and turned into a :class:`TransformJob`.

``pipealgos transform JOB.json`` takes the keys and nesting of
``boto3.client("sagemaker").create_transform_job(**request)``. As for ``pipealgos run``, the
shape is checked against botocore's own service model (unknown keys, types, enums, patterns,
bounds; every problem with its JSON path, all at once), ``S3Uri`` / ``S3OutputPath`` may be
local paths, and keys that mean nothing locally (``TransformResources``, ``Tags``,
``DataCaptureConfig``, ``ExperimentConfig``, ...) are accepted and ignored: one local server
answers every object, whatever ``InstanceCount`` says.

The model. SageMaker's request names a model created earlier (``ModelName``); locally it is
found, in this order:

* ``--model SOURCE``: a ``model.tar.gz`` (local path, ``file://`` or ``s3://`` URI), a local
  model folder (``manifest.json`` + arrays, or SageMaker's ``model_algo-1``), or a ``.json``
  file holding the CreateModel request;
* otherwise ``<ModelName>.json`` beside ``JOB.json``: the CreateModel request boto3 users send
  before the transform job.

From a CreateModel request (checked against botocore's ``CreateModel`` shape; one container,
``PrimaryContainer`` or a one-entry ``Containers``) come ``ModelDataUrl`` (or
``ModelDataSource.S3DataSource`` with ``S3DataType: S3Object`` and ``CompressionType: Gzip``,
which is the same archive), the container's ``Environment`` (given to ``serve``), and the
``Image``: when it names an algorithm (``.../kmeans:1``, ``pipealgos:pca``) ``serve`` gets it
as ``PIPEALGOS_ALGORITHM``, which a SageMaker-trained ``model_algo-1`` needs.

Local rules (refused with the fix): ``AugmentedManifestFile`` / ``Converse`` inputs and
``SplitType: TFRecord`` (no built-in reads them); ``MaxPayloadInMB`` 0 (chunked encoding, which
SageMaker's built-ins do not support either) or over 100, and ``MaxConcurrentTransforms x
MaxPayloadInMB`` over 100, as the API refuses them; ``InputFilter`` / ``OutputFilter`` /
``JoinSource`` outside what :mod:`.records` can apply (records must be lines of CSV, JSON or
JSON Lines, and a join needs an output of the same family: CSV to CSV, JSON to JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry import UnknownAlgorithm
from ..runner.job import ALGORITHM_ENV, _get, _merge, resolve_algorithm, shape_problems
from .jsonpath import JsonPath, JsonPathError

MAX_PAYLOAD_BUDGET_MB = 100  # MaxConcurrentTransforms x MaxPayloadInMB, and MaxPayloadInMB alone
CSV, JSON, JSONLINES = "text/csv", "application/json", "application/jsonlines"
LINE_FAMILIES = {CSV: "csv", JSON: "json", JSONLINES: "json", "application/json-lines": "json",
                 "application/x-jsonlines": "json", "application/jsonl": "json"}


class TransformSpecError(ValueError):
    """The transform request (or its model) is malformed; ``problems`` lists ``(json_path, message)``."""

    def __init__(self, problems: list[tuple[str, str]], what: str = "transform job request") -> None:
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"the {what} has {len(problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from: ``uri`` (a ``model.tar.gz`` or a local model folder) and the
    environment ``serve`` gets (the CreateModel container's, plus ``PIPEALGOS_ALGORITHM`` from its image)."""

    uri: str
    environment: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DataProcessing:
    input_filter: JsonPath | None = None  # None: the identity "$"
    output_filter: JsonPath | None = None
    join_input: bool = False

    @property
    def per_record(self) -> bool:
        """Outputs must be split into one per input record (to join or to filter them)."""
        return self.join_input or self.output_filter is not None


@dataclass(frozen=True)
class TransformJob:
    name: str
    model_name: str
    input_uri: str
    data_type: str  # S3Prefix | ManifestFile
    content_type: str | None
    gzip: bool
    split_type: str  # None | Line | RecordIO
    output_path: str
    accept: str | None
    assemble_with: str  # None | Line
    batch_strategy: str | None  # MultiRecord | SingleRecord; None: /execution-parameters decides
    max_payload_mb: int | None
    max_concurrent: int | None
    invocation_timeout: float = 600.0
    max_retries: int = 3
    environment: tuple[tuple[str, str], ...] = ()
    processing: DataProcessing = DataProcessing()


def media_type(value: str | None) -> str:
    """``"Text/CSV; charset=utf-8"`` -> ``"text/csv"``."""
    return (value or "").split(";", 1)[0].strip().lower()


def _compile(c: list, expression: str | None, path: str) -> JsonPath | None:
    if expression is None or expression.strip() == "$":
        return None
    try:
        return JsonPath(expression)
    except JsonPathError as exc:
        c.append((path, str(exc)))
        return None


def _data_processing(c: list, top: dict, split_type: str, content_type: str | None,
                     accept: str | None) -> DataProcessing:
    dp = _get(top, "DataProcessing", dict, {})
    processing = DataProcessing(_compile(c, _get(dp, "InputFilter", str), "$.DataProcessing.InputFilter"),
                                _compile(c, _get(dp, "OutputFilter", str), "$.DataProcessing.OutputFilter"),
                                _get(dp, "JoinSource", str) == "Input")
    if processing.input_filter is None and not processing.per_record:
        return processing
    family = LINE_FAMILIES.get(media_type(content_type))
    output_family = LINE_FAMILIES.get(media_type(accept) or JSON)  # no Accept: the server's default, JSON
    if split_type != "Line" or family is None:
        c.append(("$.DataProcessing", "InputFilter, OutputFilter and JoinSource apply to records that are lines "
                  "of CSV, JSON or JSON Lines: set TransformInput.SplitType to Line and ContentType to text/csv or "
                  f"application/jsonlines (got SplitType {split_type}, ContentType {content_type or 'none'})"))
    elif processing.join_input and output_family != family:
        c.append(("$.TransformOutput.Accept", f"JoinSource Input joins {family.upper()} input with output of the "
                  f"same kind: set Accept to {'text/csv' if family == 'csv' else 'application/jsonlines'}"))
    elif processing.per_record and output_family is None:
        c.append(("$.TransformOutput.Accept", "OutputFilter needs CSV, JSON or JSON Lines output to select from: "
                  "set Accept to text/csv or application/jsonlines"))
    return processing


def _payload_limits(c: list, top: dict) -> tuple[int | None, int | None]:
    payload = _get(top, "MaxPayloadInMB", int)
    concurrent = _get(top, "MaxConcurrentTransforms", int) or None  # 0: unset, as the API treats it
    if payload is not None and not 1 <= payload <= MAX_PAYLOAD_BUDGET_MB:
        c.append(("$.MaxPayloadInMB", f"must be 1..{MAX_PAYLOAD_BUDGET_MB} (0 means chunked transfer, which the "
                  f"built-in algorithms do not support), got {payload}"))
    elif payload is not None and concurrent is not None and payload * concurrent > MAX_PAYLOAD_BUDGET_MB:
        c.append(("$.MaxConcurrentTransforms", f"MaxConcurrentTransforms x MaxPayloadInMB = {concurrent} x {payload}"
                  f" exceeds {MAX_PAYLOAD_BUDGET_MB}: lower one of them"))
    return payload, concurrent


def parse_transform_job(request: Any) -> TransformJob:
    """Check a CreateTransformJob request (a parsed JSON object) and build the :class:`TransformJob`."""
    shape = shape_problems(request, "CreateTransformJob")
    top = request if isinstance(request, dict) else {}
    c: list[tuple[str, str]] = []
    tin = _get(top, "TransformInput", dict, {})
    s3 = _get(_get(tin, "DataSource", dict, {}), "S3DataSource", dict, {})
    data_type = _get(s3, "S3DataType", str, "S3Prefix")
    if data_type not in ("S3Prefix", "ManifestFile"):
        c.append(("$.TransformInput.DataSource.S3DataSource.S3DataType",
                  f"{data_type} is not supported by pipealgos; use S3Prefix or ManifestFile"))
    split_type = _get(tin, "SplitType", str, "None")
    if split_type == "TFRecord":
        c.append(("$.TransformInput.SplitType", "TFRecord is not read by the built-in algorithms; use RecordIO for "
                                                "application/x-recordio-protobuf, Line for CSV and JSON Lines"))
    tout = _get(top, "TransformOutput", dict, {})
    content_type, accept = _get(tin, "ContentType", str), _get(tout, "Accept", str)
    processing = _data_processing(c, top, split_type, content_type, accept)
    payload, concurrent = _payload_limits(c, top)
    client = _get(top, "ModelClientConfig", dict, {})
    environment = {k: v for k, v in _get(top, "Environment", dict, {}).items() if isinstance(v, str)}
    problems = _merge(shape, c)
    if problems:
        raise TransformSpecError(problems)
    return TransformJob(
        name=top["TransformJobName"], model_name=top["ModelName"], input_uri=s3["S3Uri"], data_type=data_type,
        content_type=content_type, gzip=_get(tin, "CompressionType", str) == "Gzip", split_type=split_type,
        output_path=tout["S3OutputPath"], accept=accept, assemble_with=_get(tout, "AssembleWith", str, "None"),
        batch_strategy=_get(top, "BatchStrategy", str), max_payload_mb=payload, max_concurrent=concurrent,
        invocation_timeout=float(_get(client, "InvocationsTimeoutInSeconds", int, 600)),
        max_retries=_get(client, "InvocationsMaxRetries", int, 3),
        environment=tuple(sorted(environment.items())), processing=processing)


# -- the model -------------------------------------------------------------------------------
def parse_create_model(request: Any, source: str) -> ModelSource:
    """The :class:`ModelSource` of a CreateModel request (``source`` names its file in errors)."""
    shape = shape_problems(request, "CreateModel")
    top = request if isinstance(request, dict) else {}
    c: list[tuple[str, str]] = []
    containers = _get(top, "Containers", list, [])
    if "PrimaryContainer" in top and containers:
        c.append(("$.Containers", "give PrimaryContainer or Containers, not both"))
    if len(containers) > 1:
        c.append(("$.Containers", f"{len(containers)} containers (an inference pipeline) are not supported; give one"))
    path = "$.PrimaryContainer" if "PrimaryContainer" in top else "$.Containers[0]"
    container = _get(top, "PrimaryContainer", dict) or (containers[0] if containers else {})
    container = container if isinstance(container, dict) else {}
    uri = _model_data_uri(c, container, path)
    environment = {k: v for k, v in _get(container, "Environment", dict, {}).items() if isinstance(v, str)}
    image = _get(container, "Image", str)
    if image and ALGORITHM_ENV not in environment:
        try:
            environment[ALGORITHM_ENV] = resolve_algorithm({"TrainingImage": image}, environment)[0]
        except UnknownAlgorithm:
            pass  # an image that names no algorithm: the model's own manifest names it
    problems = _merge(shape, c)
    if problems:
        raise TransformSpecError(problems, f"CreateModel request {source}")
    return ModelSource(uri, tuple(sorted(environment.items())))


def _model_data_uri(c: list, container: dict, path: str) -> str:
    url = _get(container, "ModelDataUrl", str)
    s3 = _get(_get(container, "ModelDataSource", dict, {}), "S3DataSource", dict)
    if url:
        return url
    if s3 is not None:
        if _get(s3, "S3DataType", str) != "S3Object" or _get(s3, "CompressionType", str) != "Gzip":
            c.append((f"{path}.ModelDataSource.S3DataSource", "only a model.tar.gz (S3DataType S3Object, "
                      "CompressionType Gzip) is supported; or give ModelDataUrl"))
        return _get(s3, "S3Uri", str, "")
    c.append((f"{path}.ModelDataUrl", "required: the model.tar.gz (s3:// URI or local path) to serve"))
    return ""


def _read_json(path: Path, what: str) -> Any:
    data = Path(path).read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TransformSpecError([("$", f"{path} is not UTF-8 JSON: {exc}")], what) from None


def resolve_model(job: TransformJob, job_file: Path, model: str | None) -> ModelSource:
    """The model for ``job`` (see the module docstring): ``--model`` when given, else
    ``<ModelName>.json`` beside the job file."""
    if model is not None and not model.endswith(".json"):
        return ModelSource(model)
    path = Path(model) if model is not None else Path(job_file).parent / f"{job.model_name}.json"
    if not path.is_file():
        raise TransformSpecError([("$.ModelName", f"no model for '{job.model_name}': {path} does not exist. Give "
                                   "--model with a model.tar.gz (path or s3:// URI), a model folder or a CreateModel "
                                   f"request, or put the CreateModel request in {path}")])
    request = _read_json(path, f"CreateModel request {path}")
    named = request.get("ModelName") if isinstance(request, dict) else None
    if model is None and named != job.model_name:
        raise TransformSpecError([("$.ModelName", f"{path} creates the model '{named}', not '{job.model_name}'")])
    return parse_create_model(request, str(path))


def load_transform_job(path: Path) -> TransformJob:
    """Read and check a CreateTransformJob request file."""
    return parse_transform_job(_read_json(path, "transform job request"))
