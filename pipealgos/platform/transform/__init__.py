"""``pipealgos transform JOB.json``: a CreateTransformJob request run locally, as SageMaker's
batch transform runs it (``serve`` in a subprocess, ``GET /execution-parameters``, the input
objects POSTed in pieces to ``/invocations``, ``<input key>.out`` under ``S3OutputPath``)."""
