"""Helpers for the runner tests: data objects and CreateTrainingJob requests."""

from __future__ import annotations

import io

import numpy as np

from pipealgos.io import write_dense
from seaweed import BUCKET


def dense_bytes(x: np.ndarray) -> bytes:
    out = io.BytesIO()
    write_dense(out, x.astype(np.float32))
    return out.getvalue()


def upload_parts(server, prefix: str, parts: list[bytes], name="part-{:03d}.pbr") -> str:
    client = server.client()
    for i, data in enumerate(parts):
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{name.format(i)}", Body=data)
    return f"s3://{BUCKET}/{prefix}/"


def pca_request(name: str, uri: str, output: str, *, mode="File", data_type="S3Prefix", hosts=1,
                distribution="FullyReplicated", feature_dim=6, num_components=3, channel_extra=None,
                max_runtime=None) -> dict:
    """A CreateTrainingJob request for PCA, as a boto3 user writes it."""
    channel = {"ChannelName": "train", "InputMode": mode,
               "DataSource": {"S3DataSource": {"S3DataType": data_type, "S3Uri": uri,
                                               "S3DataDistributionType": distribution}}}
    channel.update(channel_extra or {})
    request = {
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::000000000000:role/ignored-locally",
        "AlgorithmSpecification": {"TrainingImage": "382416733822.dkr.ecr.us-east-1.amazonaws.com/pca:1",
                                   "TrainingInputMode": "File"},
        "HyperParameters": {"feature_dim": str(feature_dim), "num_components": str(num_components),
                            "mini_batch_size": "64"},
        "InputDataConfig": [channel],
        "OutputDataConfig": {"S3OutputPath": output},
        "ResourceConfig": {"InstanceCount": hosts, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 1},
    }
    if max_runtime is not None:
        request["StoppingCondition"] = {"MaxRuntimeInSeconds": max_runtime}
    return request


def reference_pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(singular values ascending, components d×k) from numpy's SVD of the centred data."""
    centred = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return s[:k][::-1], vt[:k][::-1].T
