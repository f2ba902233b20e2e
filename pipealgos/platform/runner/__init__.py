"""The local job runner: ``pipealgos run JOB.json`` plays SageMaker's part (S3 → File/Pipe
channels, one ``train`` process per host, artifacts to ``S3OutputPath``).

Entry points: ``job.load_job`` / ``job.parse_job`` (the request) and ``runner.run_job``.
Nothing is imported here, so ``pipealgos --help`` and ``pipealgos convert`` start without
loading torch.
"""
