"""Dynamic batching under concurrency: single-row ModelInfer calls are coalesced (the batch
size histogram shows runs above one row) and every answer equals an unbatched run."""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort
import pytest
from inference_support import N_FEATURES
from prometheus_client import REGISTRY

from flywheel.common.grpc.client import aio_channel
from flywheel.inference.settings import InferenceSettings
from flywheel.oip import grpc_service_pb2 as oip
from flywheel.oip import grpc_service_pb2_grpc as oip_grpc

CONCURRENCY = 64


@pytest.fixture
def inference_settings() -> InferenceSettings:
    return InferenceSettings(grpc_port=0, metrics_port=0, max_queue_delay_us=2000,
                             max_batch_size=32)


def batch_stats() -> tuple[float, float, float]:
    labels = {"model": "churn"}
    count = REGISTRY.get_sample_value("flywheel_inference_batch_size_count", labels) or 0.0
    total = REGISTRY.get_sample_value("flywheel_inference_batch_size_sum", labels) or 0.0
    single = REGISTRY.get_sample_value(
        "flywheel_inference_batch_size_bucket", {**labels, "le": "1.0"}) or 0.0
    return count, total, single


def infer_request(row: np.ndarray) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name="churn")
    request.inputs.add(name="features", datatype="FP32", shape=[1, N_FEATURES])
    request.raw_input_contents.append(row.astype(np.float32).tobytes())
    return request


async def test_concurrent_single_rows_are_coalesced_and_match_unbatched_runs(
    inference, model_v1
):
    x = np.random.default_rng(2).normal(size=(CONCURRENCY * 4, N_FEATURES)).astype(np.float32)
    count0, rows0, single0 = batch_stats()
    async with aio_channel(f"127.0.0.1:{inference.port}") as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        replies = []
        for start in range(0, len(x), CONCURRENCY):
            replies += await asyncio.gather(*(
                stub.ModelInfer(infer_request(x[i]), timeout=10)
                for i in range(start, start + CONCURRENCY)))
    count, rows, single = batch_stats()
    runs, batched_runs = count - count0, (count - single) - (count0 - single0)
    assert rows - rows0 == len(x)
    assert batched_runs > 0 and runs < len(x), (runs, batched_runs)

    session = ort.InferenceSession(model_v1, providers=["CPUExecutionProvider"])
    for i, reply in enumerate(replies):
        label, probabilities = session.run(None, {"features": x[i:i + 1]})
        assert reply.model_version == "1"
        np.testing.assert_array_equal(np.frombuffer(reply.raw_output_contents[0], np.int64), label)
        np.testing.assert_allclose(
            np.frombuffer(reply.raw_output_contents[1], np.float32).reshape(1, 2), probabilities,
            rtol=1e-5, atol=1e-7)
