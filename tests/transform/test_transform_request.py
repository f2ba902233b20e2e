"""The CreateTransformJob request and the model it names, checked before anything runs."""

from __future__ import annotations

import copy
import json

import pytest

from pipealgos.platform.transform.request import (TransformSpecError, parse_create_model, parse_transform_job,
                                                  resolve_model)

REQUEST = {
    "TransformJobName": "km-batch", "ModelName": "km",
    "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/in/"}},
                       "ContentType": "text/csv", "SplitType": "Line", "CompressionType": "Gzip"},
    "TransformOutput": {"S3OutputPath": "s3://bucket/out/", "Accept": "text/csv", "AssembleWith": "Line"},
    "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 2, "MaxConcurrentTransforms": 4,
    "ModelClientConfig": {"InvocationsTimeoutInSeconds": 30, "InvocationsMaxRetries": 1},
    "DataProcessing": {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"},
}


def request(**changes) -> dict:
    out = copy.deepcopy(REQUEST)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = out
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return out


def problems(req) -> dict[str, str]:
    with pytest.raises(TransformSpecError) as info:
        parse_transform_job(req)
    return dict(info.value.problems)


def test_a_boto3_request_becomes_the_job():
    job = parse_transform_job(request())
    assert (job.name, job.model_name, job.input_uri, job.split_type, job.gzip) == \
        ("km-batch", "km", "s3://bucket/in/", "Line", True)
    assert (job.batch_strategy, job.max_payload_mb, job.max_concurrent) == ("MultiRecord", 2, 4)
    assert (job.invocation_timeout, job.max_retries, job.assemble_with) == (30.0, 1, "Line")
    assert job.processing.join_input and job.processing.input_filter.apply(["id", "1"]) == ["1"]


def test_unset_batch_settings_are_left_to_the_server():
    job = parse_transform_job(request(BatchStrategy=None, MaxPayloadInMB=None, MaxConcurrentTransforms=None))
    assert (job.batch_strategy, job.max_payload_mb, job.max_concurrent) == (None, None, None)


def test_local_paths_are_accepted_where_the_api_wants_s3():
    job = parse_transform_job(request(TransformInput__DataSource__S3DataSource__S3Uri="data/in",
                                      TransformOutput__S3OutputPath="/tmp/out"))
    assert (job.input_uri, job.output_path) == ("data/in", "/tmp/out")


def test_every_problem_is_reported_with_its_path():
    found = problems(request(TransformJobName="bad_name!", TransformInput__SplitType="Lines",
                             TransformOutput__Acept="text/csv", MaxPayloadInMB=0,
                             DataProcessing={"InputFilter": "$..x"}))
    assert "does not match the API's pattern" in found["$.TransformJobName"]
    assert "'Lines' is not one of" in found["$.TransformInput.SplitType"]
    assert "unknown field" in found["$.TransformOutput.Acept"]
    assert "chunked" in found["$.MaxPayloadInMB"]
    assert "$..x" in found["$.DataProcessing.InputFilter"]


@pytest.mark.parametrize("changes, path, fragment", [
    ({"MaxPayloadInMB": 30, "MaxConcurrentTransforms": 4}, "$.MaxConcurrentTransforms", "30 exceeds 100"),
    ({"TransformInput__SplitType": "TFRecord"}, "$.TransformInput.SplitType", "use RecordIO"),
    ({"TransformInput__DataSource__S3DataSource__S3DataType": "AugmentedManifestFile"},
     "$.TransformInput.DataSource.S3DataSource.S3DataType", "use S3Prefix or ManifestFile"),
    ({"TransformInput__SplitType": "RecordIO"}, "$.DataProcessing", "set TransformInput.SplitType to Line"),
    ({"TransformOutput__Accept": "application/jsonlines"}, "$.TransformOutput.Accept", "set Accept to text/csv"),
    ({"DataProcessing": {"OutputFilter": "$[0]"}, "TransformOutput__Accept": "application/x-recordio-protobuf"},
     "$.TransformOutput.Accept", "OutputFilter needs CSV, JSON or JSON Lines output"),
])
def test_local_rules(changes, path, fragment):
    assert fragment in problems(request(**changes))[path]


MODEL = {"ModelName": "km", "ExecutionRoleArn": "arn:aws:iam::000000000000:role/x",
         "PrimaryContainer": {"Image": "174872318107.dkr.ecr.us-west-2.amazonaws.com/kmeans:1",
                              "ModelDataUrl": "s3://bucket/model.tar.gz", "Environment": {"A": "1"}}}


def test_a_create_model_request_gives_the_archive_environment_and_algorithm():
    model = parse_create_model(MODEL, "km.json")
    assert model.uri == "s3://bucket/model.tar.gz"
    assert dict(model.environment) == {"A": "1", "PIPEALGOS_ALGORITHM": "kmeans"}


def test_model_data_source_and_custom_images():
    container = {"Image": "my-registry/custom:1", "ModelDataSource": {"S3DataSource": {
        "S3Uri": "s3://b/m.tar.gz", "S3DataType": "S3Object", "CompressionType": "Gzip"}}}
    model = parse_create_model({"ModelName": "km", "Containers": [container]}, "km.json")
    assert (model.uri, model.environment) == ("s3://b/m.tar.gz", ())


@pytest.mark.parametrize("model, path, fragment", [
    ({"ModelName": "km", "PrimaryContainer": {"Image": "x"}}, "$.PrimaryContainer.ModelDataUrl", "required"),
    ({"ModelName": "km", "Containers": [{"ModelDataUrl": "a"}, {"ModelDataUrl": "b"}]}, "$.Containers",
     "inference pipeline"),
    ({"ModelName": "km", "PrimaryContainer": {"ModelDataSource": {"S3DataSource": {
        "S3Uri": "s3://b/m/", "S3DataType": "S3Prefix", "CompressionType": "None"}}}},
     "$.PrimaryContainer.ModelDataSource.S3DataSource", "only a model.tar.gz"),
])
def test_create_model_problems(model, path, fragment):
    with pytest.raises(TransformSpecError) as info:
        parse_create_model(model, "km.json")
    assert fragment in dict(info.value.problems)[path] and "km.json" in str(info.value)


def test_the_model_is_found_beside_the_job_or_given(tmp_path):
    job_file = tmp_path / "job.json"
    job = parse_transform_job(request())
    with pytest.raises(TransformSpecError, match="km.json does not exist. Give --model"):
        resolve_model(job, job_file, None)
    (tmp_path / "km.json").write_text(json.dumps(MODEL))
    assert resolve_model(job, job_file, None).uri == "s3://bucket/model.tar.gz"
    assert resolve_model(job, job_file, "/models/model.tar.gz").uri == "/models/model.tar.gz"
    (tmp_path / "km.json").write_text(json.dumps({**MODEL, "ModelName": "other"}))
    with pytest.raises(TransformSpecError, match="creates the model 'other', not 'km'"):
        resolve_model(job, job_file, None)
