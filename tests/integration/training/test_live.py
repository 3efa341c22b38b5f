"""Live gating on joined labels: automatic rollback of a bad promotion, shadow promotion,
and the gRPC API's statuses."""

from __future__ import annotations

import grpc
import pytest
from training_kit import FEATURES, Concept, SwitchTrainer, produce, read_all, wait_for

from flywheel.common.grpc.client import aio_channel
from flywheel.common.spec import Task
from flywheel.training.trainers import TrainingData
from flywheel.v1 import common_pb2, events_pb2, training_pb2, training_pb2_grpc

NO_TRIGGERS = "{every_n_labels: 0, accuracy_below: 0, accuracy_drop: 0, window: 200}"


def _register(app, concept, shuffled: bool) -> int:
    trainer = SwitchTrainer()
    trainer.mode = "shuffled" if shuffled else "good"
    X, y = concept.rows(600)
    artifact = trainer.fit(TrainingData(X, y, Task.BINARY_CLASSIFICATION, FEATURES)).to_onnx()
    version = app.registry.register(
        "churn", artifact, task=common_pb2.MODEL_TASK_BINARY_CLASSIFICATION,
        entity_type="customer", feature_names=FEATURES,
        metrics={"accuracy": 0.5 if shuffled else 0.95},
    )
    return version.version


async def test_rollback_and_shadow_promotion(make_app, kafka_bootstrap):
    app = await make_app(NO_TRIGGERS)
    topics, concept = app.topics, Concept(seed=3)
    good, bad = _register(app, concept, False), _register(app, concept, True)
    async with aio_channel(f"127.0.0.1:{app.port}") as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        reply = await stub.PromoteModelVersion(training_pb2.PromoteModelVersionRequest(
            model_name="churn", version=good), timeout=10)
        assert reply.previous_version == 0
        produce(kafka_bootstrap, topics.labeled, concept.examples("g", 250, version=good,
                                                                  accuracy=0.9))
        # A forced bad promotion, then its live accuracy on joined labels: rolled back.
        await stub.PromoteModelVersion(training_pb2.PromoteModelVersionRequest(
            model_name="churn", version=bad, reason="forced"), timeout=10)
        produce(kafka_bootstrap, topics.labeled, concept.examples("b", 250, version=bad,
                                                                  accuracy=0.55))
        await wait_for(lambda: app.registry.aliases("churn")["champion"] == good, 30,
                       "the rollback")
        last = read_all(kafka_bootstrap, topics.model_versions)[-1]
        assert last.change == events_pb2.MODEL_VERSION_CHANGE_ROLLED_BACK
        assert last.model_version.version == good and last.aliases["champion"] == good
        assert (last.alias_changes[0].version, last.alias_changes[0].previous_version) == \
            (good, bad)
        listed = await stub.ListModelVersions(training_pb2.ListModelVersionsRequest(
            model_name="churn"), timeout=10)
        assert [v.version for v in listed.versions] == [good, bad]
        assert listed.aliases["champion"] == good

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RollbackModel(training_pb2.RollbackModelRequest(model_name="churn"),
                                     timeout=10)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        # The world drifts; a shadow challenger that learned the new concept beats the
        # champion on the same joined labels (the champion scored on the shadow's rows).
        drifted = Concept(seed=11)
        challenger = _register(app, drifted, False)
        await stub.PromoteModelVersion(training_pb2.PromoteModelVersionRequest(
            model_name="churn", version=challenger, alias="shadow"), timeout=10)
        produce(kafka_bootstrap, topics.labeled, drifted.examples(
            "s", 250, version=challenger, accuracy=0.97, role=common_pb2.MODEL_ROLE_SHADOW))
        produce(kafka_bootstrap, topics.labeled, drifted.examples("c", 250, version=good,
                                                                  accuracy=0.6))
        await wait_for(lambda: app.registry.aliases("churn") == {"champion": challenger}, 30,
                 "the shadow promotion")
        last = read_all(kafka_bootstrap, topics.model_versions)[-1]
        assert last.change == events_pb2.MODEL_VERSION_CHANGE_PROMOTED
        assert last.model_version.version == challenger and "live gate" in last.reason

        for call, request in [
            (stub.GetTrainingRun, training_pb2.GetTrainingRunRequest(run_id="nope")),
            (stub.ListModelVersions, training_pb2.ListModelVersionsRequest(model_name="nope")),
            (stub.PromoteModelVersion, training_pb2.PromoteModelVersionRequest(
                model_name="churn", version=99)),
            (stub.TriggerRetrain, training_pb2.TriggerRetrainRequest(model_name="nope")),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND, request

        # A manual trigger returns a run id; GetTrainingRun follows it to the end.
        run_id = (await stub.TriggerRetrain(training_pb2.TriggerRetrainRequest(
            model_name="churn", reason="by hand"), timeout=10)).run_id

        async def finished():
            run = (await stub.GetTrainingRun(training_pb2.GetTrainingRunRequest(run_id=run_id),
                                             timeout=10)).run
            return run if run.state in (training_pb2.TRAINING_RUN_STATE_SUCCEEDED,
                                        training_pb2.TRAINING_RUN_STATE_FAILED) else None
        run = None
        for _ in range(150):
            run = await finished()
            if run:
                break
            await __import__("asyncio").sleep(0.2)
        assert run and run.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED, run
        assert run.trigger_reason == "by hand" and run.lineage.training_data
        assert run.stage_seconds["train"] > 0 and run.gate.metric == "accuracy"
