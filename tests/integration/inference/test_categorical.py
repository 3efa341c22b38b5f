"""Predict by entity on a model reading a string feature (encoded with the version's
vocabulary), an int64 feature and a double, through the real feature store: the answer is the
model run on the codes, and the prediction log carries exactly those codes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from inference_support import (
    SPEC_PATH,
    customer_event,
    read_predictions,
    register_byo,
    start_inference,
)
from onnx import TensorProto

from flywheel.common.grpc.client import aio_channel
from flywheel.common.spec import load_spec
from flywheel.inference.settings import InferenceSettings
from flywheel.inference.testing_models import SCORE_FLAT, scored_onnx, scored_reference
from flywheel.v1 import common_pb2, features_pb2, features_pb2_grpc, prediction_pb2, prediction_pb2_grpc

FEATURES = ["segment", "visits", "f00"]
WEIGHTS = ([1.3, -0.4, 0.9], -0.5)
# segment's vocabulary in flywheel.yaml: retail, smb, enterprise -> 1, 2, 3; others 0.
CUSTOMERS = {
    "c-retail": ("retail", 3, 0.2),
    "c-smb": ("smb", 0, -1.5),
    "c-enterprise": ("enterprise", 2, 0.7),
    "c-unknown": ("government", 1, 1.1),
}
CODES = {"retail": 1.0, "smb": 2.0, "enterprise": 3.0, "government": 0.0}


async def test_strings_are_served_and_logged_as_their_codes(
    common, registry, feature_store, tmp_path,
):
    model = scored_onnx([("segment", (None,), TensorProto.FLOAT),
                         ("visits", (None, 1), TensorProto.INT64),
                         ("f00", (None, 1), TensorProto.DOUBLE)], *WEIGHTS, SCORE_FLAT)
    meta = register_byo(registry, tmp_path / "sources", "mixed", model, features=FEATURES,
                        spec=load_spec(SPEC_PATH))
    assert list(meta.vocabularies["segment"].values) == ["retail", "smb", "enterprise"]
    events = [customer_event(e, dict(zip(FEATURES, v))) for e, v in CUSTOMERS.items()]
    events.append(customer_event("c-no-segment", {"visits": 4, "f00": 0.1}))
    async with aio_channel(feature_store.target) as channel:
        written = await features_pb2_grpc.FeatureStoreServiceStub(channel).WriteFeatures(
            features_pb2.WriteFeaturesRequest(rows=events), timeout=10)
    assert written.written_count == len(events), written

    app = await start_inference(common, InferenceSettings(
        grpc_port=0, metrics_port=0, feature_store_target=feature_store.target))
    try:
        async with aio_channel(f"127.0.0.1:{app.port}") as channel:
            ids = [*CUSTOMERS, "c-no-segment"]
            reply = await prediction_pb2_grpc.PredictionServiceStub(channel).Predict(
                prediction_pb2.PredictRequest(model="mixed",
                                              entity_ids=prediction_pb2.EntityIds(ids=ids)),
                timeout=10)
    finally:
        await app.stop()

    encoded = {e: [CODES[s], float(n), x] for e, (s, n, x) in CUSTOMERS.items()}
    p = scored_reference(np.array(list(encoded.values())), *WEIGHTS)
    by_entity = {row.entity_id: row for row in reply.predictions}
    for i, entity in enumerate(CUSTOMERS):
        row = by_entity[entity]
        assert row.status == prediction_pb2.ROW_STATUS_OK, row.detail
        assert row.output.predicted_class == int(p[i] >= 0.5)
        assert list(row.output.probabilities) == pytest.approx([1 - p[i], p[i]], abs=1e-6)
    assert by_entity["c-no-segment"].status == prediction_pb2.ROW_STATUS_FEATURE_MISSING
    assert "segment" in by_entity["c-no-segment"].detail

    records = await asyncio.to_thread(read_predictions, common, len(CUSTOMERS))
    assert len(records) == len(CUSTOMERS)
    for record in records:
        assert record.role == common_pb2.MODEL_ROLE_CHAMPION
        assert list(record.feature_names) == FEATURES
        assert list(record.features) == encoded[record.entity_id]  # exactly what the model saw
        assert record.output == by_entity[record.entity_id].output
