"""The join against the real broker and Redis: early, late, twice, never, shadow."""

from __future__ import annotations

import time
from collections import Counter

import grpc
import pytest
from feedback_kit import feedback, prediction, read_committed, wait_for

from flywheel.common.grpc.client import aio_channel
from flywheel.feedback.app import FeedbackApp
from flywheel.feedback.settings import FeedbackSettings
from flywheel.v1 import common_pb2, feedback_pb2, feedback_pb2_grpc

N = 20_000


@pytest.fixture
async def app(common, names):
    app = FeedbackApp(common, FeedbackSettings(grpc_port=0, metrics_port=0,
                                               instance_id=names.namespace))
    await app.start()
    wait_for(lambda: app.joiner.healthy, 30, "the join consumer to be assigned")
    yield app
    await app.stop()


def _category(i: int) -> str:
    return ["early"] * 5 + ["normal"] * 5 + ["twice"] * 2 + ["late", "never", "never"] + \
        ["shadow"] * 2 + ["normal"] * 3


async def test_join_early_late_twice_never(app, raw_producer, topics, kafka_bootstrap):
    base = time.time() - 3000
    cats = {f"p{i}": _category(i)[i % 20] for i in range(N)}
    t_pred = {pid: base + i * 0.01 for i, pid in enumerate(cats)}
    # Early: the feedback is on the topic before its prediction.
    for pid, cat in cats.items():
        if cat == "early":
            raw_producer.send(topics.feedback, pid, feedback(pid, 1, t_pred[pid] + 5))
    raw_producer.flush()
    for pid, cat in cats.items():
        raw_producer.send(topics.predictions, pid, prediction(pid, t_pred[pid]))
        if cat == "shadow":  # logged under the champion's id, with its own prediction id
            raw_producer.send(topics.predictions, pid,
                              prediction(f"{pid}-s", t_pred[pid], version=2,
                                         key_role=common_pb2.MODEL_ROLE_SHADOW))
    for pid, cat in cats.items():
        when = t_pred[pid] + 30
        if cat in ("normal", "shadow"):
            raw_producer.send(topics.feedback, pid, feedback(pid, 0, when))
        elif cat == "twice":
            raw_producer.send(topics.feedback, pid, feedback(pid, 0, when, key="first"))
            raw_producer.send(topics.feedback, pid, feedback(pid, 1, when + 1, key="second"))
        elif cat == "late":
            raw_producer.send(topics.feedback, pid, feedback(pid, 1, t_pred[pid] + 601))
    raw_producer.flush()

    count = Counter(cats.values())
    in_time = count["early"] + count["normal"] + count["twice"] + count["shadow"]
    expected = in_time + count["shadow"]
    labeled = read_committed(kafka_bootstrap, topics.labeled, expected, timeout_s=90)
    ids = Counter(example.prediction_id for example in labeled)
    assert len(labeled) == expected and all(v == 1 for v in ids.values())
    want = {p for p, c in cats.items() if c in ("early", "normal", "twice", "shadow")}
    want |= {f"{p}-s" for p, c in cats.items() if c == "shadow"}
    assert set(ids) == want

    by_id = {e.prediction_id: e for e in labeled}
    twice = next(p for p, c in cats.items() if c == "twice")
    assert by_id[twice].label.class_label == 0  # first wins
    shadow = by_id[next(p for p, c in cats.items() if c == "shadow") + "-s"]
    assert shadow.role == common_pb2.MODEL_ROLE_SHADOW and shadow.model_version == 2
    early = by_id[next(p for p, c in cats.items() if c == "early")]
    assert list(early.features) == [float(i) + 0.5 for i in range(24)]
    assert early.prediction.predicted_class == 1 and early.model_version == 1
    assert early.feedback_time.ToNanoseconds() > early.prediction_time.ToNanoseconds()

    wait_for(lambda: app.joiner.stats.late == count["late"], 10, "late count")
    late = read_committed(kafka_bootstrap, topics.late_feedback, count["late"], timeout_s=30)
    assert len(late) == count["late"]
    assert app.joiner.stats.duplicate_feedback == count["twice"]
    assert app.joiner.stats.joined == expected


async def test_grpc_validation_and_publish(app, raw_producer, topics, kafka_bootstrap):
    async with aio_channel(f"127.0.0.1:{app.port}") as channel:
        stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
        bad = [
            (feedback_pb2.RecordFeedbackRequest(label=common_pb2.Label(class_label=1)),
             "prediction_id"),
            (feedback_pb2.RecordFeedbackRequest(prediction_id="x"), "label"),
            (feedback_pb2.RecordFeedbackRequest(prediction_id="x",
                                                label=common_pb2.Label(value=0.5)), "class_label"),
            (feedback_pb2.RecordFeedbackRequest(prediction_id="x",
                                                label=common_pb2.Label(class_label=2)), "range"),
            (feedback_pb2.RecordFeedbackRequest(
                prediction_id="x", label=common_pb2.Label(class_label=1),
                source=common_pb2.LABEL_SOURCE_MODEL), "LABEL_SOURCE_MODEL"),
        ]
        for request, words in bad:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RecordFeedback(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in info.value.details()

        now = time.time()
        raw_producer.send(topics.predictions, "g1", prediction("g1", now - 5))
        raw_producer.flush()
        reply = await stub.RecordFeedback(feedback_pb2.RecordFeedbackRequest(
            prediction_id="g1", label=common_pb2.Label(class_label=1),
            source=common_pb2.LABEL_SOURCE_HUMAN), timeout=10)
        assert reply.idempotency_key
        batch = await stub.RecordFeedbackBatch(feedback_pb2.RecordFeedbackBatchRequest(feedback=[
            feedback_pb2.RecordFeedbackRequest(prediction_id="g2",
                                               label=common_pb2.Label(class_label=0)),
            feedback_pb2.RecordFeedbackRequest(prediction_id="g3"),
        ]), timeout=10)
        assert batch.accepted_count == 1
        assert [(r.index, r.field) for r in batch.rejections] == [(1, "label")]

        async def stream():
            for i in range(5):
                yield feedback_pb2.RecordFeedbackRequest(
                    prediction_id=f"s{i}", label=common_pb2.Label(class_label=i % 3))
        reply = await stub.RecordFeedbackStream(stream(), timeout=10)
        assert reply.accepted_count == 4 and reply.rejections[0].index == 2

    labeled = read_committed(kafka_bootstrap, topics.labeled, 1, timeout_s=30, settle_s=0.5)
    assert [e.prediction_id for e in labeled] == ["g1"]
    assert labeled[0].label_source == common_pb2.LABEL_SOURCE_HUMAN
