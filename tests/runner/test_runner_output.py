"""The output location: checked before any host starts; a name used again is refused (or
replaced with --overwrite, the earlier artifacts removed first); no model left by a failure."""

import pytest

from jobkit import pca_request
from pipealgos.platform.runner.job import parse_job
from pipealgos.platform.runner.output import OutputLocation
from pipealgos.platform.runner.runner import JobRun, RunOptions
from pipealgos.platform.runner.storage import StorageError, Stores
from seaweed import BUCKET


def run_without_data(tmp_path, output: str, name="again", **options):
    """A job whose input is empty: it fails at listing, after the output was prepared."""
    empty = tmp_path / "no-data"
    empty.mkdir(exist_ok=True)
    return JobRun(parse_job(pca_request(name, str(empty), output)), RunOptions(progress="plain", **options)).run()


def earlier_run(out):
    folder = out / "again" / "output"
    folder.mkdir(parents=True)
    (folder / "model.tar.gz").write_bytes(b"earlier model")
    (folder / "output.tar.gz").write_bytes(b"earlier output")
    return folder


def test_a_name_used_again_is_refused_before_anything_runs(tmp_path):
    folder = earlier_run(tmp_path / "out")
    result = run_without_data(tmp_path, str(tmp_path / "out"))
    assert result.status == "Failed" and result.summary["ExitCodes"] == {}
    assert "a training job named 'again' already has artifacts" in result.failure
    assert "--overwrite" in result.failure and "no objects found" not in result.failure
    assert (folder / "model.tar.gz").read_bytes() == b"earlier model"


def test_overwrite_removes_the_earlier_model_before_the_run(tmp_path):
    folder = earlier_run(tmp_path / "out")
    result = run_without_data(tmp_path, str(tmp_path / "out"), overwrite=True)
    assert result.status == "Failed" and "no objects found" in result.failure
    assert list(folder.iterdir()) == []  # the failed re-run's output holds nothing from the earlier run


def test_a_name_used_again_on_s3_is_refused(s3env, tmp_path):
    s3env.client().put_object(Bucket=BUCKET, Key="dup/again/output/model.tar.gz", Body=b"earlier")
    result = run_without_data(tmp_path, f"s3://{BUCKET}/dup")
    assert result.status == "Failed" and "already has artifacts at s3://pipealgos-test/dup/again/output" \
        in result.failure
    run_without_data(tmp_path, f"s3://{BUCKET}/dup", overwrite=True)
    assert "Contents" not in s3env.client().list_objects_v2(Bucket=BUCKET, Prefix="dup/")


@pytest.mark.parametrize("below", ["", "/sub"])
def test_an_output_path_that_is_a_file_fails_before_any_host(tmp_path, below):
    (tmp_path / "out").write_text("a file")
    result = run_without_data(tmp_path, str(tmp_path / "out") + below)
    assert result.status == "Failed" and result.summary["ExitCodes"] == {}
    assert f"{tmp_path / 'out'} is an existing file, not a folder" in result.failure


def test_a_missing_bucket_fails_before_any_host(s3env, tmp_path):
    result = run_without_data(tmp_path, "s3://no-such-bucket-here/out")
    assert result.status == "Failed" and "S3OutputPath s3://no-such-bucket-here/out cannot be read" in result.failure
    assert "NoSuchBucket" in result.failure


def test_a_failed_upload_leaves_no_artifact(tmp_path):
    location = OutputLocation(parse_job(pca_request("up", "/d", str(tmp_path / "out"))), Stores())
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_algo-1.npz").write_bytes(b"weights")
    (tmp_path / "out" / "up" / "output" / "model.tar.gz").mkdir(parents=True)  # the model cannot land there
    with pytest.raises(StorageError, match="model.tar.gz"):
        location.upload([model], [tmp_path / "no-output-data"])
    left = [p.name for p in (tmp_path / "out" / "up" / "output").iterdir()]
    assert left == ["model.tar.gz"]  # only the obstacle: output.tar.gz was removed again, no .partial file
