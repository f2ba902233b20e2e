"""The CreateTrainingJob request: accepted as boto3 users write it; errors name the JSON path.
And the ML root a host gets, with the config files in SageMaker's shapes."""

import json
import subprocess
import sys

import pytest

from jobkit import pca_request
from pipealgos.platform.config import read_input_data_config, read_resource_config
from pipealgos.platform.registry import get_algorithm
from pipealgos.platform.runner.job import JobSpecError, load_job, parse_job
from pipealgos.platform.runner.layout import lay_out_host


def test_a_sagemaker_request_parses():
    request = pca_request("job-1", "s3://bucket/train/", "s3://bucket/out", mode="Pipe", hosts=3,
                          distribution="ShardedByS3Key",
                          channel_extra={"ContentType": "application/x-recordio-protobuf",
                                         "CompressionType": "Gzip", "ShuffleConfig": {"Seed": 3}})
    request["CheckpointConfig"] = {"S3Uri": "s3://bucket/ckpt"}
    request["Environment"] = {"A": "1"}
    job = parse_job(request)
    assert job.algorithm == "pca" and job.hosts == ["algo-1", "algo-2", "algo-3"]
    (ch,) = job.channels
    assert (ch.input_mode, ch.sharded, ch.compression, ch.shuffle_seed) == ("Pipe", True, "Gzip", 3)
    assert job.environment == (("A", "1"),) and job.checkpoint_uri == "s3://bucket/ckpt"


def test_problems_are_listed_with_their_json_paths():
    request = pca_request("bad_name!", "s3://b/t/", "s3://b/o")
    request["HyperParameters"]["feature_dim"] = 6
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataTyp"] = "S3Prefix"
    request["InputDataConfig"][0]["CompressionType"] = "Gzip"
    request["ResourceConfig"]["InstanceCount"] = 0
    request["AlgorithmSpecification"]["TrainingImage"] = "x/unknown-algo:1"
    request["Surprise"] = True
    with pytest.raises(JobSpecError) as info:
        parse_job(request)
    paths = {path for path, _ in info.value.problems}
    assert paths == {
        "$.TrainingJobName", "$.HyperParameters.feature_dim",
        "$.InputDataConfig[0].DataSource.S3DataSource.S3DataTyp", "$.InputDataConfig[0].CompressionType",
        "$.ResourceConfig.InstanceCount", "$.AlgorithmSpecification.TrainingImage", "$.Surprise",
    }
    text = str(info.value)
    assert 'write it as "6"' in text and "Gzip applies to Pipe mode only" in text and "unknown-algo" in text


def test_missing_and_unsupported_fields():
    with pytest.raises(JobSpecError) as info:
        parse_job({"TrainingJobName": "j", "AlgorithmSpecification": {"AlgorithmName": "pca"},
                   "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
                       "S3DataType": "AugmentedManifestFile", "S3Uri": "s3://b/m"}}}],
                   "ResourceConfig": {"InstanceCount": 1}})
    problems = dict(info.value.problems)
    assert "required" in problems["$.OutputDataConfig"] or "required" in problems["$.OutputDataConfig.S3OutputPath"]
    assert "not supported" in problems["$.InputDataConfig[0].DataSource.S3DataSource.S3DataType"]
    with pytest.raises(JobSpecError, match=r"\$: must be an object"):
        parse_job([1, 2])


def test_cli_rejects_a_bad_request_with_exit_2(tmp_path):
    bad = tmp_path / "job.json"
    bad.write_text(json.dumps({"TrainingJobName": "j", "AlgorithmSpecification": {"TrainingImage": "pca"},
                               "OutputDataConfig": {"S3OutputPath": str(tmp_path)},
                               "ResourceConfig": {"InstanceCount": "2"}}))
    proc = subprocess.run([sys.executable, "-m", "pipealgos.cli", "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "$.ResourceConfig.InstanceCount: must be an integer" in proc.stderr
    (tmp_path / "broken.json").write_text("{")
    proc = subprocess.run([sys.executable, "-m", "pipealgos.cli", "run", str(tmp_path / "broken.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "is not valid JSON" in proc.stderr


def test_host_layout_matches_sagemaker_files(tmp_path):
    request = pca_request("lay", "s3://b/t/", "s3://b/o", mode="Pipe", hosts=12, distribution="ShardedByS3Key",
                          channel_extra={"ContentType": "text/csv;label_size=0"})
    request["CheckpointConfig"] = {"S3Uri": "s3://b/ckpt"}
    job = parse_job(request)
    ml = lay_out_host(job, "algo-2", tmp_path / "algo-2")
    resources = json.loads((ml.config_dir / "resourceconfig.json").read_text())
    assert resources["hosts"][:4] == ["algo-1", "algo-10", "algo-11", "algo-12"]  # lexicographic, as SageMaker
    assert resources["instance_groups"][0]["hosts"] == resources["hosts"]
    assert read_resource_config(ml).rank == resources["hosts"].index("algo-2")
    idc = json.loads((ml.config_dir / "inputdataconfig.json").read_text())
    assert idc == {"train": {"ContentType": "text/csv;label_size=0", "TrainingInputMode": "Pipe",
                             "S3DistributionType": "ShardedByS3Key", "RecordWrapperType": "None"}}
    assert read_input_data_config(ml)["train"].input_mode == "Pipe"
    hps = json.loads((ml.config_dir / "hyperparameters.json").read_text())
    assert hps == {"feature_dim": "6", "num_components": "3", "mini_batch_size": "64"}
    ckpt = json.loads((ml.config_dir / "checkpointconfig.json").read_text())
    assert ckpt == {"LocalPath": str(ml.root / "checkpoints"), "S3Uri": "s3://b/ckpt"}
    assert ml.model_dir.is_dir() and ml.output_data_dir.is_dir()


@pytest.mark.parametrize("spec, environment, expected", [
    ({"TrainingImage": "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"}, {}, "kmeans"),
    ({"TrainingImage": "pipealgos/kmeans:1"}, {}, "kmeans"),
    ({"TrainingImage": "linear-learner"}, {}, "linear-learner"),
    ({"TrainingImage": "pipealgos:pca"}, {}, "pca"),
    ({"TrainingImage": "localhost:5000/pipealgos:kmeans"}, {}, "kmeans"),
    ({"TrainingImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/pipealgos:cpu"},
     {"PIPEALGOS_ALGORITHM": "kmeans"}, "kmeans"),
    ({"TrainingImage": "pipealgos:pca"}, {"PIPEALGOS_ALGORITHM": "kmeans"}, "kmeans"),  # as `train` in the image
    ({"TrainingImage": "pipealgos@sha256:" + "0" * 64}, {"PIPEALGOS_ALGORITHM": "pca"}, "pca"),
    ({"AlgorithmName": "linear-learner"}, {}, "linear-learner"),
])
def test_every_image_form_the_readme_shows_chooses_the_algorithm(spec, environment, expected):
    request = pca_request("img", "s3://b/t/", "s3://b/o")
    request["AlgorithmSpecification"] = {"TrainingInputMode": "File", **spec}
    request["HyperParameters"] = get_algorithm(expected).conformance.hyperparameters  # valid for it
    request["Environment"] = environment
    assert parse_job(request).algorithm == expected


@pytest.mark.parametrize("image, environment, says", [
    ("pipealgos:cpu", {}, "set Environment.PIPEALGOS_ALGORITHM"),
    ("pipealgos", {}, "set Environment.PIPEALGOS_ALGORITHM"),
    ("x/pca:1", {"PIPEALGOS_ALGORITHM": "kmeans"}, "the image names pca but Environment.PIPEALGOS_ALGORITHM"),
    ("pipealgos:cpu", {"PIPEALGOS_ALGORITHM": "nope"}, "unknown algorithm 'nope'"),
])
def test_an_image_that_names_no_single_algorithm_is_refused(image, environment, says):
    request = pca_request("img", "s3://b/t/", "s3://b/o")
    request["AlgorithmSpecification"]["TrainingImage"] = image
    request["Environment"] = environment
    with pytest.raises(JobSpecError) as info:
        parse_job(request)
    assert says in dict(info.value.problems)["$.AlgorithmSpecification.TrainingImage"]


def test_all_hyperparameter_problems_are_reported_before_any_host_starts():
    request = pca_request("hp", "s3://b/t/", "s3://b/o")
    request["HyperParameters"] = {"feature_dim": "six", "num_components": "3", "mini_batch_size": "64",
                                  "num_componets": "2"}
    with pytest.raises(JobSpecError) as info:
        parse_job(request)
    message = dict(info.value.problems)["$.HyperParameters"]
    assert "'feature_dim' has invalid value 'six'" in message and "'num_componets'" in message


def test_checking_a_request_imports_no_algorithm_and_no_torch():
    """The registry names algorithms' code lazily, so `pipealgos run` refuses a hyperparameter
    typo before importing torch (seconds) or starting any host. (A schema may read an
    algorithm's torch-free tables, such as linear learner's predictors.)"""
    code = ("import sys, json; from pipealgos.platform.runner.job import parse_job, JobSpecError\n"
            f"request = json.loads({json.dumps(json.dumps(pca_request('hp', 's3://b/t/', 's3://b/o')))})\n"
            "request['HyperParameters']['num_componets'] = '2'\n"
            "try:\n    parse_job(request)\nexcept JobSpecError:\n    pass\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or (m.startswith('pipealgos.algorithms')"
            " and m.endswith(('.training', '.model')))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_channel_names_are_refused(name):
    request = pca_request("dots", "s3://b/t/", "s3://b/o")
    request["InputDataConfig"][0]["ChannelName"] = name
    with pytest.raises(JobSpecError) as info:
        parse_job(request)
    assert "outside input/data/" in dict(info.value.problems)["$.InputDataConfig[0].ChannelName"]


def test_the_shape_is_botocores_sagemaker_model():
    """Unknown, missing and mistyped keys anywhere, even in parts the runner ignores; enums
    and patterns from the model. RoleArn may be left out and S3 URIs may be local paths."""
    request = pca_request("shape", "/data/train", "/data/out")
    del request["RoleArn"]
    request["VpcConfig"] = {"SecurityGroupIds": ["sg-1"], "Subnet": ["s"]}
    request["Tags"] = [{"Key": "team"}]
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": "3600"}
    request["InputDataConfig"][0]["InputMode"] = "pipe"
    request["InputDataConfig"][0]["ChannelName"] = "tr ain"
    request["OutputDataConfig"]["CompressionType"] = "gzip"
    with pytest.raises(JobSpecError) as info:
        parse_job(request)
    problems = dict(info.value.problems)
    assert set(problems) == {"$.VpcConfig.Subnet", "$.VpcConfig.Subnets", "$.Tags[0].Value",
                             "$.StoppingCondition.MaxRuntimeInSeconds", "$.InputDataConfig[0].InputMode",
                             "$.InputDataConfig[0].ChannelName", "$.OutputDataConfig.CompressionType"}
    assert problems["$.VpcConfig.Subnet"].startswith("unknown field; valid fields here: SecurityGroupIds, Subnets")
    assert problems["$.Tags[0].Value"] == "required field is missing"
    assert problems["$.StoppingCondition.MaxRuntimeInSeconds"] == 'must be an integer, got "3600"'
    assert "'pipe' is not one of Pipe, File, FastFile" == problems["$.InputDataConfig[0].InputMode"]
    assert "does not match the API's pattern" in problems["$.InputDataConfig[0].ChannelName"]


def test_a_job_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "job.json"
    path.write_bytes(json.dumps(pca_request("enc", "/d/t", "/d/o")).replace("enc", "\u00e9nc").encode("latin-1"))
    with pytest.raises(JobSpecError, match=r"is not UTF-8 text \(byte \d+ is 0xe9\): save the JSON file as UTF-8"):
        load_job(path)
