"""gRPC adapter of TrainingService: protobuf in, controller / registry call, protobuf out."""

from __future__ import annotations

import asyncio

from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.common.errors import InvalidArgument, NotFound
from flywheel.common.registry import CHAMPION, ModelRegistry
from flywheel.common.spec import FlywheelSpec
from flywheel.training.controller import Controller
from flywheel.training.promotions import Promotions
from flywheel.training.runner import (
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TrainingRun,
)
from flywheel.v1 import training_pb2, training_pb2_grpc

_STATES = {
    QUEUED: training_pb2.TRAINING_RUN_STATE_QUEUED,
    RUNNING: training_pb2.TRAINING_RUN_STATE_RUNNING,
    SUCCEEDED: training_pb2.TRAINING_RUN_STATE_SUCCEEDED,
    FAILED: training_pb2.TRAINING_RUN_STATE_FAILED,
    INTERRUPTED: training_pb2.TRAINING_RUN_STATE_INTERRUPTED,
}


def _timestamp(seconds: float) -> Timestamp | None:
    if not seconds:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def run_to_proto(run: TrainingRun) -> training_pb2.TrainingRun:
    message = training_pb2.TrainingRun(
        run_id=run.run_id, model_name=run.model_name, state=_STATES[run.state],
        trigger_reason=run.trigger_reason, candidate_version=run.candidate_version,
        promoted=run.promoted, lineage=run.lineage(), error=run.error,
        stage_seconds=run.stage_seconds,
        started_at=_timestamp(run.started_at), finished_at=_timestamp(run.finished_at),
        mode=run.mode, trainer=run.trainer,
        candidates=[training_pb2.CandidateResult(
            mode=c.mode, metric=c.metric, score=c.score, passed=c.passed,
            decision=c.decision, version=c.version,
        ) for c in run.candidates],
    )
    if run.gate is not None:
        gate = run.gate
        message.gate.CopyFrom(training_pb2.GateResult(
            passed=gate.passed, metric=gate.metric, candidate=gate.candidate,
            champion=gate.champion if gate.champion is not None else 0.0,
            holdout_size=gate.holdout, decision=gate.decision,
        ))
    return message


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, spec: FlywheelSpec, registry: ModelRegistry, controller: Controller,
                 promotions: Promotions) -> None:
        self._spec = spec
        self._registry = registry
        self._controller = controller
        self._promotions = promotions

    def _known(self, model_name: str) -> str:
        if not model_name:
            raise InvalidArgument("model_name is required", field="model_name")
        declared = any(m.name == model_name for m in self._spec.models)
        if not declared and model_name not in self._registry.model_names():
            raise NotFound(f"unknown model {model_name!r}", field="model_name")
        return model_name

    async def TriggerRetrain(self, request, context):
        if not request.model_name:
            raise InvalidArgument("model_name is required", field="model_name")
        run = self._controller.trigger(request.model_name, request.reason or "manual")
        return training_pb2.TriggerRetrainResponse(run_id=run.run_id)

    async def GetTrainingRun(self, request, context):
        if not request.run_id:
            raise InvalidArgument("run_id is required", field="run_id")
        return training_pb2.GetTrainingRunResponse(
            run=run_to_proto(self._controller.get(request.run_id))
        )

    async def ListTrainingRuns(self, request, context):
        if request.limit < 0:
            raise InvalidArgument("limit must be 0 (all) or positive", field="limit")
        runs = self._controller.recent(request.model_name, request.limit)
        if request.model_name and not runs:
            self._known(request.model_name)  # NOT_FOUND for a name nothing knows
        return training_pb2.ListTrainingRunsResponse(runs=[run_to_proto(r) for r in runs])

    async def ListModelVersions(self, request, context):
        name = self._known(request.model_name)
        versions = await asyncio.to_thread(self._registry.versions, name)
        return training_pb2.ListModelVersionsResponse(
            versions=versions, aliases=self._registry.aliases(name)
        )

    async def PromoteModelVersion(self, request, context):
        name = self._known(request.model_name)
        if request.version <= 0:
            raise InvalidArgument("version must be positive", field="version")
        previous = await asyncio.to_thread(
            self._promotions.promote, name, request.version, request.alias or CHAMPION,
            request.reason or "promoted by hand",
        )
        return training_pb2.PromoteModelVersionResponse(
            model_version=self._registry.get(name, request.version), previous_version=previous
        )

    async def RollbackModel(self, request, context):
        name = self._known(request.model_name)
        rolled_from, rolled_to = await asyncio.to_thread(
            self._promotions.rollback, name, request.reason or "rolled back by hand"
        )
        return training_pb2.RollbackModelResponse(rolled_back_from=rolled_from,
                                                  rolled_back_to=rolled_to)
