"""One trace through the flywheel: the five services as processes (`flywheel up`), each writing
its spans to a folder (FLYWHEEL_TRACE_DIR), on the session's real Kafka and Redis.

The test is the caller and picks its own trace ids: an Ingest's trace reaches the feature
store's materialization; one Predict's trace id is on its prediction record, on its labeled
example (which links to the feedback call's trace), and, by link, on the training run that
trained on it, whose own trace runs on to the swap of the version that run produced.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from confluent_kafka import Consumer

from flywheel.common.kafka.topics import Topics
from flywheel.demo.seed import train_seed_model
from flywheel.oip import grpc_service_pb2 as oip
from flywheel.oip import grpc_service_pb2_grpc as oip_grpc
from flywheel.testing.cli import flywheel, last_json, log_tails, mesh_environment
from flywheel.v1 import (
    common_pb2,
    events_pb2,
    features_pb2,
    features_pb2_grpc,
    feedback_pb2,
    feedback_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    prediction_pb2,
    prediction_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)

pytestmark = pytest.mark.timeout(400)

FEATURES = ["f0", "f1", "f2", "f3"]
ENTITIES = 480
MODEL = "churn"
SPEC = f"""
entities:
  - name: customer
    features: [{", ".join(f"{{name: {f}}}" for f in FEATURES)}]
models:
  - name: {MODEL}
    entity_type: customer
    task: binary_classification
    features: [{", ".join(FEATURES)}]
    gate: {{metric: accuracy, min_improvement: 0.0, min_holdout: 30}}
    training: {{window: 2000, holdout_fraction: 0.25, min_examples: 200}}
"""


def traceparent(trace_id: str) -> tuple[tuple[str, str], ...]:
    return (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),)


def trace_id_of(header: str | bytes | None) -> str:
    text = header.decode() if isinstance(header, bytes) else (header or "")
    parts = text.split("-")
    return parts[1] if len(parts) == 4 else ""


def until(what: str, check: Callable[[], object], timeout_s: float, home: Path) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout_s}s\n{log_tails(home)}")


def spans(folder: Path) -> list[dict]:
    found = []
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if line.strip():
                span = json.loads(line)
                span["file"] = path.name
                found.append(span)
    return found


def hex_id(value: str) -> str:
    return value.removeprefix("0x")


def in_trace(all_spans: list[dict], trace_id: str) -> list[dict]:
    return [s for s in all_spans if hex_id(s["context"]["trace_id"]) == trace_id]


def linked_traces(span: dict) -> set[str]:
    return {hex_id(link["context"]["trace_id"]) for link in span.get("links", ())}


def records(bootstrap: str, topic: str, count: int, timeout_s: float) -> Iterator:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{secrets.token_hex(6)}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < count and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    seen += 1
                    yield message
    finally:
        consumer.close()


@pytest.fixture
def mesh(kafka_bootstrap: str, redis_url: str, names, tmp_path: Path) -> Iterator[dict]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    env = mesh_environment(kafka_bootstrap, redis_url, names.namespace, tmp_path / "home", spec)
    env["FLYWHEEL_TRACE_DIR"] = str(tmp_path / "traces")
    env["FLYWHEEL_TRAINING_CHECK_INTERVAL_S"] = "0.5"
    up = flywheel(env, "up", "--free-ports", "--json", timeout=240)
    try:
        assert up.returncode == 0, f"flywheel up failed:\n{up.stderr[-4000:]}"
        addresses = {s["name"]: s["address"] for s in last_json(up)["services"]}
        yield {"env": env, "addresses": addresses, "home": tmp_path / "home",
               "traces": tmp_path / "traces", "work": tmp_path}
    finally:
        down = flywheel(env, "down", "--json", timeout=120)
        assert down.returncode == 0, down.stderr[-2000:]


def test_one_trace_from_predict_to_the_swap_of_the_version_trained_on_it(mesh, kafka_bootstrap,
                                                                        names):
    env, addresses, home = mesh["env"], mesh["addresses"], mesh["home"]
    topics = Topics(names.namespace)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(ENTITIES, len(FEATURES)))
    # The seed model learned one rule; the labels follow another: a retrained model wins.
    artifact, _ = train_seed_model(x, (x[:, 0] > 0).astype(int), 7)
    (mesh["work"] / "seed.onnx").write_bytes(artifact)
    registered = flywheel(env, "models", "register", str(mesh["work"] / "seed.onnx"), "--name",
                          MODEL, "--entity-type", "customer", "--features", ",".join(FEATURES),
                          "--task", "binary_classification", "--promote", "--json", timeout=120)
    seed_version = last_json(registered, (0,))["version"]

    ingest_trace, predict_trace, feedback_trace = (secrets.token_hex(16) for _ in range(3))
    channels = {name: grpc.insecure_channel(address) for name, address in addresses.items()}
    try:
        oip_stub = oip_grpc.GRPCInferenceServiceStub(channels["inference"])
        until("the seed model serves", lambda: oip_stub.ModelReady(
            oip.ModelReadyRequest(name=MODEL, version=str(seed_version)), timeout=5).ready,
            120, home)

        events = [events_pb2.Event(entity_type="customer", entity_id=f"c{i}", features={
            f: common_pb2.FeatureValue(double_value=float(v)) for f, v in zip(FEATURES, row)})
            for i, row in enumerate(x)]
        for event in events:
            event.event_time.GetCurrentTime()
        reply = ingest_pb2_grpc.IngestServiceStub(channels["ingest"]).Ingest(
            ingest_pb2.IngestRequest(events=events), timeout=30,
            metadata=traceparent(ingest_trace))
        assert reply.accepted_count == ENTITIES, reply
        features = features_pb2_grpc.FeatureStoreServiceStub(channels["features"])
        until("the events are materialized", lambda: all(
            e.status == features_pb2.FEATURE_STATUS_FOUND for e in features.GetOnlineFeatures(
                features_pb2.GetOnlineFeaturesRequest(
                    entity_type="customer", entity_ids=[e.entity_id for e in events],
                    feature_names=FEATURES), timeout=10).entities), 60, home)

        predict = prediction_pb2_grpc.PredictionServiceStub(channels["inference"])
        predictions: dict[str, int] = {}  # prediction id -> row
        for start in range(0, ENTITIES, 120):
            ids = [f"c{i}" for i in range(start, start + 120)]
            answer = predict.Predict(prediction_pb2.PredictRequest(
                model=MODEL, entity_ids=prediction_pb2.EntityIds(ids=ids)), timeout=30,
                metadata=traceparent(predict_trace) if start == 0 else ())
            for offset, row in enumerate(answer.predictions):
                assert row.status == prediction_pb2.ROW_STATUS_OK, row
                predictions[row.prediction_id] = start + offset
        chosen = next(iter(predictions))

        record_feedback = feedback_pb2_grpc.FeedbackServiceStub(channels["feedback"])
        for prediction_id, row in predictions.items():
            record_feedback.RecordFeedback(feedback_pb2.RecordFeedbackRequest(
                prediction_id=prediction_id,
                label=common_pb2.Label(class_label=int(x[row, 1] > 0))), timeout=10,
                metadata=traceparent(feedback_trace) if prediction_id == chosen else ())

        # Its prediction record and its labeled example carry the Predict's trace.
        logged = {m.key().decode(): dict(m.headers() or ()) for m in records(
            kafka_bootstrap, topics.predictions.name, len(predictions), 60)}
        assert trace_id_of(logged[chosen].get("traceparent")) == predict_trace
        labeled = {m.key().decode(): dict(m.headers() or ()) for m in records(
            kafka_bootstrap, topics.labeled.name, len(predictions), 90)}
        assert len(labeled) == len(predictions), f"{len(labeled)} labeled\n{log_tails(home)}"
        assert trace_id_of(labeled[chosen].get("traceparent")) == predict_trace

        training = training_pb2_grpc.TrainingServiceStub(channels["training"])

        def finished_run() -> training_pb2.TrainingRun | None:
            run_id = training.TriggerRetrain(training_pb2.TriggerRetrainRequest(
                model_name=MODEL, reason="trace test"), timeout=10).run_id
            while True:
                run = training.GetTrainingRun(training_pb2.GetTrainingRunRequest(run_id=run_id),
                                              timeout=10).run
                if run.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED:
                    return run
                if run.state == training_pb2.TRAINING_RUN_STATE_FAILED:
                    return None  # not every label is in the dataset yet: trigger again
                time.sleep(0.3)

        run = until("a training run succeeds", finished_run, 120, home)
        assert run.promoted, run
        version = run.candidate_version
        until("the new version serves", lambda: oip_stub.ModelReady(
            oip.ModelReadyRequest(name=MODEL, version=str(version)), timeout=5).ready, 60, home)
    finally:
        for channel in channels.values():
            channel.close()

    def the_swap() -> list[dict]:
        all_spans = spans(mesh["traces"])
        runs = [s for s in all_spans if s["name"] == "training run"
                and s["attributes"].get("flywheel.run_id") == run.run_id]
        if not runs:
            return []
        run_trace = hex_id(runs[0]["context"]["trace_id"])
        swaps = [s for s in in_trace(all_spans, run_trace) if s["name"] == "swap model"
                 and s["attributes"].get("flywheel.model.version") == version]
        return [runs[0], swaps[0]] if swaps else []

    run_span, swap_span = until("the run's trace reaches the swap", the_swap, 30, home)
    all_spans = spans(mesh["traces"])
    # The run links to the Predict's trace; the swap is in the run's own trace.
    assert predict_trace in linked_traces(run_span), run_span
    assert swap_span["file"].startswith("inference-")

    # The Predict's trace: the server span, the feature fetch answered by the feature store,
    # the logged predictions, the joined label (linked to the feedback call's trace).
    names_in_predict = {(s["name"], s["file"].split("-")[0]) for s in in_trace(all_spans,
                                                                               predict_trace)}
    for expected in [("/flywheel.v1.PredictionService/Predict", "inference"),
                     ("fetch features", "inference"), ("run model", "inference"),
                     ("log predictions", "inference"),
                     ("/flywheel.v1.FeatureStoreService/GetOnlineFeatures", "features"),
                     ("join label", "feedback"), ("store labeled examples", "training")]:
        assert expected in names_in_predict, (expected, sorted(names_in_predict))
    joins = [s for s in in_trace(all_spans, predict_trace) if s["name"] == "join label"
             and s["attributes"].get("flywheel.prediction_id") == chosen]
    assert joins and feedback_trace in linked_traces(joins[0]), joins
    # The feedback call's own trace reached Kafka.
    assert any(s["name"] == "/flywheel.v1.FeedbackService/RecordFeedback"
               for s in in_trace(all_spans, feedback_trace))
    # Ingest -> materialized, one trace.
    ingest_spans = {(s["name"], s["file"].split("-")[0]) for s in in_trace(all_spans,
                                                                           ingest_trace)}
    assert ("/flywheel.v1.IngestService/Ingest", "ingest") in ingest_spans, ingest_spans
    assert ("materialize events", "features") in ingest_spans, ingest_spans
    assert os.listdir(mesh["traces"])
