"""The committed generated code matches the protos (the same check CI runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_generated_code_matches_protos():
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_generated.sh")],
        capture_output=True, text=True, timeout=120,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "matches" in result.stdout


def test_open_inference_protocol_keeps_its_wire_names():
    from flywheel.oip import grpc_service_pb2

    service = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    infer = grpc_service_pb2.ModelInferRequest.DESCRIPTOR
    assert infer.fields_by_name["raw_input_contents"].number == 7
    assert infer.fields_by_name["inputs"].number == 5
    contents = grpc_service_pb2.InferTensorContents.DESCRIPTOR
    assert contents.fields_by_name["fp32_contents"].number == 6
    assert contents.fields_by_name["bytes_contents"].number == 8


def test_every_enum_has_an_unspecified_zero():
    from flywheel.v1 import common_pb2, events_pb2, features_pb2, prediction_pb2, training_pb2

    for module in (common_pb2, events_pb2, features_pb2, prediction_pb2, training_pb2):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            assert enum.values_by_number[0].name.endswith("_UNSPECIFIED"), enum.full_name
