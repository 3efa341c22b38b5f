"""The Open Inference Protocol through tritonclient, exactly as a user drives it (from its
own process: see triton_user.py), and the bad-input matrix: the right status for each,
never UNKNOWN. One server for the module."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import pytest_asyncio
from inference_support import N_FEATURES, SPEC_PATH, register, start_inference

from flywheel.common.registry import ModelRegistry
from flywheel.common.settings import CommonSettings
from flywheel.inference.settings import InferenceSettings
from flywheel.testing import Names

pytestmark = pytest.mark.asyncio(loop_scope="module")
MAX_MESSAGE = 256 * 1024
USER_SCRIPT = Path(__file__).with_name("triton_user.py")

EXPECTED_STATUS = {
    "wrong-dtype": "INVALID_ARGUMENT",
    "wrong-width": "INVALID_ARGUMENT",
    "wrong-rank": "INVALID_ARGUMENT",
    "size-mismatch": "INVALID_ARGUMENT",
    "empty-batch": "INVALID_ARGUMENT",
    "nan": "INVALID_ARGUMENT",
    "inf": "INVALID_ARGUMENT",
    "unknown-input": "INVALID_ARGUMENT",
    "no-inputs": "INVALID_ARGUMENT",
    "unknown-model": "NOT_FOUND",
    "unknown-version": "NOT_FOUND",
    "non-numeric-version": "NOT_FOUND",
    "oversize": "RESOURCE_EXHAUSTED",
    "metadata-unknown-model": "NOT_FOUND",
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory, kafka_bootstrap, redis_url, model_v1, model_v2):
    registry = ModelRegistry(tmp_path_factory.mktemp("oip") / "registry")
    register(registry, model_v1)
    register(registry, model_v2, alias="shadow")
    common = CommonSettings(namespace=Names.fresh().namespace, kafka_bootstrap=kafka_bootstrap,
                            redis_url=redis_url, spec_path=SPEC_PATH,
                            registry_uri=str(registry.root), log_json=False)
    app = await start_inference(
        common, InferenceSettings(grpc_port=0, metrics_port=0, max_message_bytes=MAX_MESSAGE)
    )
    yield app
    await app.stop()


async def run_user(server, scenario: str) -> dict:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(USER_SCRIPT), f"127.0.0.1:{server.port}", scenario, str(MAX_MESSAGE),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    return json.loads(stdout.decode().strip().splitlines()[-1])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def happy(server) -> dict:
    return await run_user(server, "happy")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bad(server) -> dict:
    return await run_user(server, "bad")


def reference(model: bytes, x) -> list[np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {"features": np.asarray(x, dtype=np.float32)})


async def test_liveness_readiness_and_metadata(happy):
    assert happy["live"] and happy["ready"]
    assert happy["model_ready"] == {"": True, "1": True, "2": True, "3": False}  # 2: the shadow
    assert happy["unknown_ready"] is False
    assert happy["server_name"] == "flywheel-inference"
    assert happy["metadata"] == {
        "name": "churn", "versions": ["1", "2"], "platform": "onnxruntime_onnx",
        "inputs": [["features", "FP32", [-1, N_FEATURES]]],
        "outputs": [["label", "INT64", [-1]], ["probabilities", "FP32", [-1, 2]]],
    }


@pytest.mark.parametrize(("version", "model_fixture"),
                         [("", "model_v1"), ("1", "model_v1"), ("2", "model_v2")])
async def test_binary_infer_equals_onnx_runtime(happy, request, version, model_fixture):
    seen = happy["raw"][version]
    label, probabilities = reference(request.getfixturevalue(model_fixture), seen["x"])
    np.testing.assert_array_equal(seen["label"], label)
    np.testing.assert_allclose(seen["probabilities"], probabilities, rtol=1e-6)
    assert seen["model_version"] == (version or "1") and seen["id"] == "r-1"
    assert seen["raw_outputs"] == 2  # raw in, raw out, as Triton does


async def test_typed_contents_equal_onnx_runtime(happy, model_v1):
    seen = happy["typed"]
    label, probabilities = reference(model_v1, seen["x"])
    assert seen["raw_outputs"] == 0  # typed in, typed out
    np.testing.assert_array_equal(seen["label"], label)
    np.testing.assert_allclose(seen["probabilities"], probabilities, rtol=1e-6)


@pytest.mark.parametrize("case", list(EXPECTED_STATUS))
async def test_bad_inputs_get_the_right_status(bad, case):
    seen = bad[case]
    assert seen["status"] == EXPECTED_STATUS[case], seen["message"]
    assert "Traceback" not in seen["message"]


async def test_bytes_that_are_no_request_are_an_invalid_argument(server):
    """What tritonclient never sends: a body protobuf cannot read."""
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await infer(b"\x3a\x05ab", timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "the request is not a valid inference.ModelInferRequest encoding"
