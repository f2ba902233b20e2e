"""The local job runner: ``pipealgos run JOB.json`` plays SageMaker's part (S3 → File/Pipe
channels, one ``train`` process per host, artifacts to ``S3OutputPath``)."""

from .job import Job, JobSpecError, load_job, parse_job
from .runner import JobResult, JobRun, RunOptions, run_job

__all__ = ["Job", "JobResult", "JobRun", "JobSpecError", "RunOptions", "load_job", "parse_job", "run_job"]
