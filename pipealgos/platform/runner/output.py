"""Where a job's artifacts go (``S3OutputPath/<job>/output/``), checked before any host starts.

* A name used again: SageMaker refuses a duplicate ``TrainingJobName``. Locally the output
  location is the only record of earlier runs, so a name whose ``model.tar.gz`` or
  ``output.tar.gz`` is already there is refused, unless ``overwrite`` (``pipealgos run
  --overwrite``) is given: then the earlier artifacts are removed *before* the job runs, so a
  failed re-run never leaves an earlier model looking like its result.
* A local ``S3OutputPath`` must be a folder (or not exist yet) that can be written; an
  ``s3://`` one is listed, which fails early on a missing bucket or a dead endpoint.
* Artifacts are uploaded ``output.tar.gz`` first and ``model.tar.gz`` last, and an upload that
  fails removes what this run had uploaded: a failed job leaves no model behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .hosts import pack
from .job import Job
from .storage import StorageError, Stores, is_s3, join_uri, local_path

MODEL, OUTPUT = "model.tar.gz", "output.tar.gz"


class OutputError(ValueError):
    """The output location cannot take this job's artifacts; the message says why and the fix."""


class OutputLocation:
    """``S3OutputPath/<job>/output/`` of one job."""

    def __init__(self, job: Job, stores: Stores) -> None:
        self.job = job
        self.uri = join_uri(job.output_path, f"{job.name}/output")
        self.store = stores.for_uri(self.uri)

    def artifact(self, name: str) -> str:
        return join_uri(self.uri, name)

    def prepare(self, overwrite: bool) -> None:
        """Check the location and refuse (or, with ``overwrite``, remove) an earlier run's artifacts."""
        if not is_s3(self.uri):
            self._check_local_folder()
        try:
            earlier = [o.uri for o in self.store.list_prefix(self.uri.rstrip("/") + "/")
                       if o.uri.rsplit("/", 1)[-1] in (MODEL, OUTPUT)]
        except StorageError as exc:
            raise OutputError(f"S3OutputPath {self.job.output_path} cannot be read: {exc}") from None
        if earlier and not overwrite:
            raise OutputError(f"a training job named '{self.job.name}' already has artifacts at {self.uri} "
                              "(SageMaker refuses a duplicate TrainingJobName): choose another TrainingJobName, "
                              "or pass --overwrite to replace them")
        for uri in earlier:
            self.store.delete(uri)

    def _check_local_folder(self) -> None:
        """The nearest existing folder on the way to the artifacts must be a writable folder."""
        given = local_path(self.job.output_path)
        path = local_path(self.uri)
        while not path.exists() and path != path.parent:
            path = path.parent
        if not path.is_dir():
            raise OutputError(f"S3OutputPath {given}: {path} is an existing file, not a folder; "
                              "name a folder (it is created if missing)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"S3OutputPath {given}: the folder {path} cannot be written by this user")

    def upload(self, model_dirs: Sequence[Path], output_dirs: Sequence[Path]) -> dict:
        """Pack and upload both archives; the summary's artifact fields. On StorageError what
        this call had uploaded is removed again."""
        uploaded: list[str] = []
        with tempfile.TemporaryDirectory(prefix="pipealgos-pack-") as tmp:
            archives = ((OUTPUT, output_dirs), (MODEL, model_dirs))  # the model last: present means complete
            try:
                for name, folders in archives:
                    self.store.upload(pack(folders, Path(tmp) / name), self.artifact(name))
                    uploaded.append(self.artifact(name))
            except StorageError:
                for uri in uploaded:
                    self.store.delete(uri)
                raise
        return {"ModelArtifacts": {"S3ModelArtifacts": self.artifact(MODEL)}, "OutputDataArtifacts": self.artifact(OUTPUT)}
