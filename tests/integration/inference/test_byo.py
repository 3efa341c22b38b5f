"""Models brought from elsewhere, served by Predict and by tritonclient: a model of two inputs
bound to features, a binary score per row ([rows, 1] and [rows]) read by the output rule, and
pinned versions loaded on demand (one load for concurrent requests, least recently used
evicted, refused versions answered FAILED_PRECONDITION, the champion untouched). One server
for the module."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from inference_support import SPEC_PATH, read_predictions, register_byo, start_inference
from onnx import TensorProto
from prometheus_client import REGISTRY

from flywheel.common.grpc.client import aio_channel
from flywheel.common.registry import ModelRegistry
from flywheel.common.settings import CommonSettings
from flywheel.inference.settings import InferenceSettings
from flywheel.inference.testing_models import (
    CLASSES,
    SCORE_COLUMN,
    SCORE_FLAT,
    flip_byte,
    scored_onnx,
    scored_reference,
)
from flywheel.oip import grpc_service_pb2 as oip
from flywheel.oip import grpc_service_pb2_grpc as oip_grpc
from flywheel.testing import Names
from flywheel.v1 import common_pb2, prediction_pb2, prediction_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="module")
FEATURES = ["f00", "f01", "f02"]
PAIR = ([0.8, -0.6, 1.2], 0.1)
SCORE_V1 = ([1.5, 0.5, -1.0], -0.2)
SCORE_V2 = ([-0.7, 1.1, 0.4], 0.3)
V2_THRESHOLD = 0.3
REFUSAL = "inference refused it: sha256 differs"
USER_SCRIPT = Path(__file__).with_name("triton_user.py")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory, kafka_bootstrap, redis_url):
    root = tmp_path_factory.mktemp("byo")
    registry = ModelRegistry(root / "registry")
    sources = root / "sources"
    pair = scored_onnx([("dense", (None, 2), TensorProto.FLOAT),
                        ("extra", (None,), TensorProto.DOUBLE)], *PAIR, CLASSES)
    register_byo(registry, sources, "pair", pair, features=FEATURES,
                 mappings=("dense=f00,f01", "extra=f02"))
    one = scored_onnx([("x", (None, 3), TensorProto.FLOAT)], *SCORE_V1, SCORE_COLUMN)
    register_byo(registry, sources, "score", one, features=FEATURES, alias=None)
    two = scored_onnx([("x", (None, 3), TensorProto.FLOAT)], *SCORE_V2, SCORE_FLAT)
    register_byo(registry, sources, "score", two, features=FEATURES, threshold=V2_THRESHOLD)
    corrupt = register_byo(registry, sources, "score", one, features=FEATURES, alias=None)
    path = registry.artifact_path(corrupt)
    path.write_bytes(flip_byte(path.read_bytes()))
    register_byo(registry, sources, "score", one, features=FEATURES, alias=None)
    registry.set_status("score", 4, common_pb2.MODEL_VERSION_STATUS_REFUSED, REFUSAL)
    for _ in (5, 6, 7):  # spare copies of v1, cold until a test asks for them
        register_byo(registry, sources, "score", one, features=FEATURES, alias=None)
    common = CommonSettings(namespace=Names.fresh().namespace, kafka_bootstrap=kafka_bootstrap,
                            redis_url=redis_url, spec_path=SPEC_PATH,
                            registry_uri=str(registry.root), log_json=False)
    app = await start_inference(
        common, InferenceSettings(grpc_port=0, metrics_port=0, max_pinned_versions=2))
    yield app
    await app.stop()


async def _predict(server, model: str, rows: np.ndarray, version: int = 0):
    async with aio_channel(f"127.0.0.1:{server.port}") as channel:
        return await prediction_pb2_grpc.PredictionServiceStub(channel).Predict(
            prediction_pb2.PredictRequest(model=model, version=version, rows=prediction_pb2.FeatureRows(
                rows=[prediction_pb2.FeatureRow(values=r) for r in rows.tolist()])), timeout=30)


def _expect(reply, p: np.ndarray, threshold: float = 0.5) -> None:
    assert [r.status for r in reply.predictions] == [prediction_pb2.ROW_STATUS_OK] * len(p)
    assert [r.output.predicted_class for r in reply.predictions] == (p >= threshold).astype(int).tolist()
    for row, score in zip(reply.predictions, p.tolist()):
        assert list(row.output.probabilities) == pytest.approx([1 - score, score], abs=1e-6)


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(FEATURES)))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_two_inputs_each_read_their_bound_features(server):
    rows = _rows(16, 1)
    reply = await _predict(server, "pair", rows)
    assert reply.model_version == 1
    _expect(reply, scored_reference(rows, *PAIR))


async def test_a_flat_score_is_cut_at_the_registered_threshold(server):
    rows = _rows(32, 2)
    reply = await _predict(server, "score", rows)
    assert reply.model_version == 2
    p = scored_reference(rows, *SCORE_V2)
    assert ((p >= V2_THRESHOLD) != (p >= 0.5)).any()  # the threshold matters on these rows
    _expect(reply, p, V2_THRESHOLD)


async def test_a_pinned_older_version_answers_and_is_logged_as_neither_alias(server):
    rows = _rows(8, 3)
    reply = await _predict(server, "score", rows, version=1)
    assert reply.model_version == 1
    _expect(reply, scored_reference(rows, *SCORE_V1))  # a [rows, 1] score, default cut
    ids = {r.prediction_id for r in reply.predictions}
    records = await asyncio.to_thread(read_predictions, server.common, len(ids))
    mine = [r for r in records if r.prediction_id in ids]
    assert len(mine) == len(ids)
    assert {(r.model_version, r.role) for r in mine} == {(1, common_pb2.MODEL_ROLE_UNSPECIFIED)}
    row_of = {r.prediction_id: i for i, r in enumerate(reply.predictions)}
    for record in mine:
        assert record.features == pytest.approx(rows[row_of[record.prediction_id]].tolist())


async def test_concurrent_requests_for_a_cold_version_share_one_load(server):
    before = sample("flywheel_inference_pinned_loads_total", model="score", outcome="loaded")
    rows = _rows(2, 4)
    replies = await asyncio.gather(*(_predict(server, "score", rows, 5) for _ in range(8)))
    assert {r.model_version for r in replies} == {5}
    assert sample("flywheel_inference_pinned_loads_total",
                  model="score", outcome="loaded") == before + 1


async def test_the_least_recently_used_pinned_version_is_evicted(server):
    evicted = sample("flywheel_inference_pinned_evictions_total", model="score")
    rows = _rows(2, 5)
    for version in (6, 7, 6):
        assert (await _predict(server, "score", rows, version)).model_version == version
    assert server.store.served_versions("score") == [2, 6, 7]  # champion + max_pinned_versions
    assert sample("flywheel_inference_pinned_versions", model="score") == 2
    assert sample("flywheel_inference_pinned_evictions_total", model="score") > evicted


@pytest.mark.parametrize(("version", "code", "needles"), [
    (9, grpc.StatusCode.NOT_FOUND, ["version 9"]),
    (3, grpc.StatusCode.FAILED_PRECONDITION, ["version 3", "sha256"]),
    (4, grpc.StatusCode.FAILED_PRECONDITION, ["version 4", REFUSAL]),
], ids=["unknown", "artifact-fails-checks", "marked-refused"])
async def test_versions_that_cannot_be_served_are_refused_and_the_champion_stays(
    server, version, code, needles,
):
    rows = _rows(2, 6)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _predict(server, "score", rows, version)
    assert refused.value.code() == code
    assert all(n in refused.value.details() for n in needles), refused.value.details()
    async with aio_channel(f"127.0.0.1:{server.port}") as channel:
        request = oip.ModelInferRequest(model_name="score", model_version=str(version))
        request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
        request.raw_input_contents.append(rows.astype(np.float32).tobytes())
        with pytest.raises(grpc.aio.AioRpcError) as infer_refused:
            await oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert infer_refused.value.code() == code
    assert (await _predict(server, "score", rows)).model_version == 2
    assert server.store.state("score").champion.version == 2


async def test_tritonclient_feeds_both_inputs_and_pins_a_version(server):
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(USER_SCRIPT), f"127.0.0.1:{server.port}", "byo", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    seen = json.loads(stdout.decode().strip().splitlines()[-1])
    pair = seen["pair"]
    columns = np.column_stack([np.array(pair["dense"]), np.array(pair["extra"])])
    p = scored_reference(columns, *PAIR)
    assert pair["label"] == (p >= 0.5).astype(int).tolist()
    np.testing.assert_allclose(np.array(pair["probabilities"])[:, 1], p, rtol=1e-5)
    x = np.array(seen["score:"]["x"])
    assert seen["score:"]["model_version"] == "2"
    np.testing.assert_allclose(seen["score:"]["score"], scored_reference(x, *SCORE_V2), rtol=1e-5)
    assert seen["score:1"]["model_version"] == "1"
    assert np.array(seen["score:1"]["score"]).shape == (5, 1)
    np.testing.assert_allclose(np.array(seen["score:1"]["score"])[:, 0],
                               scored_reference(x, *SCORE_V1), rtol=1e-5)
    assert seen["ready_after"] == {"1": True, "2": True, "9": False}
