"""The generated protobuf module matches record.proto, and the protobuf runtime is upb."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

IO_DIR = Path(__file__).parents[2] / "pipealgos" / "io"


def test_record_pb2_is_generated_from_record_proto(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{IO_DIR}", f"--python_out={tmp_path}", str(IO_DIR / "record.proto")],
        check=True,
        capture_output=True,
    )
    regenerated = (tmp_path / "record_pb2.py").read_text()
    committed = (IO_DIR / "record_pb2.py").read_text()
    assert regenerated == committed, (
        "pipealgos/io/record_pb2.py is stale: regenerate it with the command in record.proto "
        "(grpcio-tools as pinned in pyproject's test extra)"
    )


def test_protobuf_backend_is_upb():
    from google.protobuf.internal import api_implementation

    # The pure-Python backend decodes ~50x slower; the general decoding path assumes upb.
    assert api_implementation.Type() == "upb"


def test_schema_matches_the_sdk_field_numbers():
    """Same names and numbers as the SDK's own amazon/record.proto (spec 3.2)."""
    from pipealgos.io import record_pb2

    from sagemaker.amazon import record_pb2 as sdk_pb2
    for name in ("Float32Tensor", "Float64Tensor", "Int32Tensor", "Bytes", "Value", "Record"):
        ours = record_pb2.DESCRIPTOR.message_types_by_name[name]
        theirs = sdk_pb2.DESCRIPTOR.message_types_by_name[name]
        assert ours.full_name == theirs.full_name == f"aialgs.data.{name}"
        assert {(f.name, f.number, f.type) for f in ours.fields} == {(f.name, f.number, f.type) for f in theirs.fields}
