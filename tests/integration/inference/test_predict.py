"""Predict by entity against the real feature store (in-process, on its own port): the
answer is the model run on the stored features, every prediction is on the predictions
topic exactly once with its features, and a shadow is scored and logged beside it."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from inference_support import (
    N_FEATURES,
    customer_event,
    poll_until,
    publish_change,
    read_predictions,
    register,
    start_inference,
)

from flywheel.common.grpc.client import aio_channel
from flywheel.common.registry import SHADOW
from flywheel.inference.settings import InferenceSettings
from flywheel.inference.testing_models import feature_names
from flywheel.v1 import (
    common_pb2,
    features_pb2,
    features_pb2_grpc,
    prediction_pb2,
    prediction_pb2_grpc,
)


def reference(model: bytes, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {"features": x.astype(np.float32)})


async def test_predict_by_entity_runs_the_stored_features_and_logs_each_once(
    churn, common, registry, feature_store, model_v1, model_v2
):
    names = feature_names(N_FEATURES)
    rng = np.random.default_rng(5)
    stored = {f"c{i}": rng.normal(size=N_FEATURES) for i in range(6)}
    rows = [customer_event(e, dict(zip(names, v.tolist()))) for e, v in stored.items()]
    rows.append(customer_event("partial", {"f00": 1.0, "f01": 2.0}))
    async with aio_channel(feature_store.target) as channel:
        written = await features_pb2_grpc.FeatureStoreServiceStub(channel).WriteFeatures(
            features_pb2.WriteFeaturesRequest(rows=rows), timeout=10)
    assert written.written_count == len(rows), written

    settings = InferenceSettings(grpc_port=0, metrics_port=0,
                                 feature_store_target=feature_store.target)
    app = await start_inference(common, settings)
    try:
        shadow = register(registry, model_v2, alias=None)
        changes = registry.promote("churn", shadow.version, SHADOW)
        await asyncio.to_thread(publish_change, common, registry, shadow.version,
                                "MODEL_VERSION_CHANGE_SHADOWED", changes)
        await poll_until(lambda: app.store.state("churn").shadow is not None, 20, "the shadow")

        async with aio_channel(f"127.0.0.1:{app.port}") as channel:
            stub = prediction_pb2_grpc.PredictionServiceStub(channel)
            ids = [*stored, "ghost", "partial"]
            reply = await stub.Predict(prediction_pb2.PredictRequest(
                model="churn", entity_ids=prediction_pb2.EntityIds(ids=ids)), timeout=10)
            # Bad calls: the right status, never UNKNOWN.
            for request, code in [
                (prediction_pb2.PredictRequest(model="churn"), grpc.StatusCode.INVALID_ARGUMENT),
                (prediction_pb2.PredictRequest(model="nope", entity_ids=prediction_pb2.EntityIds(
                    ids=["c0"])), grpc.StatusCode.NOT_FOUND),
                (prediction_pb2.PredictRequest(model="churn", version=9, entity_ids=
                    prediction_pb2.EntityIds(ids=["c0"])), grpc.StatusCode.NOT_FOUND),
                (prediction_pb2.PredictRequest(model="churn", rows=prediction_pb2.FeatureRows(
                    rows=[prediction_pb2.FeatureRow(values=[float("nan")] * N_FEATURES)])),
                 grpc.StatusCode.INVALID_ARGUMENT),
                (prediction_pb2.PredictRequest(model="churn", rows=prediction_pb2.FeatureRows(
                    rows=[prediction_pb2.FeatureRow(values=[1.0])])),
                 grpc.StatusCode.INVALID_ARGUMENT),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await stub.Predict(request, timeout=10)
                assert error.value.code() == code, error.value.details()
    finally:
        await app.stop()

    assert reply.model_name == "churn" and reply.model_version == 1
    by_entity = {p.entity_id: p for p in reply.predictions}
    assert [p.entity_id for p in reply.predictions] == ids
    assert by_entity["ghost"].status == prediction_pb2.ROW_STATUS_ENTITY_NOT_FOUND
    assert by_entity["partial"].status == prediction_pb2.ROW_STATUS_FEATURE_MISSING
    assert "f02" in by_entity["partial"].detail
    assert not by_entity["ghost"].prediction_id and not by_entity["partial"].prediction_id

    x = np.array(list(stored.values()))
    labels, probabilities = reference(model_v1, x)
    for i, entity in enumerate(stored):
        row = by_entity[entity]
        assert row.status == prediction_pb2.ROW_STATUS_OK and len(row.prediction_id) == 32
        assert row.output.predicted_class == labels[i]
        np.testing.assert_allclose(row.output.probabilities, probabilities[i], rtol=1e-6)

    keys: dict[str, bytes] = {}
    records = await asyncio.to_thread(read_predictions, common, 2 * len(stored), keys=keys)
    champion = [r for r in records if r.role == common_pb2.MODEL_ROLE_CHAMPION]
    shadows = [r for r in records if r.role == common_pb2.MODEL_ROLE_SHADOW]
    assert sorted(r.prediction_id for r in champion) == sorted(
        by_entity[e].prediction_id for e in stored)  # each exactly once
    assert len(shadows) == len(stored)
    returned = {by_entity[e].prediction_id for e in stored}
    assert not returned & {r.prediction_id for r in shadows}  # shadow ids are never returned
    shadow_labels, _ = reference(model_v2, x)
    for record in champion:
        assert record.model_name == "churn" and record.model_version == 1
        assert record.artifact_sha256 == registry.get("churn", 1).sha256
        assert list(record.feature_names) == feature_names(N_FEATURES)
        assert record.features == pytest.approx(stored[record.entity_id].tolist())
        assert record.output == by_entity[record.entity_id].output
        assert keys[record.prediction_id] == record.prediction_id.encode()
    for record in shadows:
        index = list(stored).index(record.entity_id)
        assert record.model_version == shadow.version
        assert record.output.predicted_class == shadow_labels[index]
        # Keyed by the champion row's id, so the caller's feedback joins the shadow too.
        assert keys[record.prediction_id] == by_entity[record.entity_id].prediction_id.encode()
        assert record.features == pytest.approx(stored[record.entity_id].tolist())
