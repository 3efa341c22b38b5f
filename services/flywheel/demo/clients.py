"""gRPC clients of the mesh's public APIs, as an application would hold them.

Every call carries a deadline. Addresses come from ``$FLYWHEEL_HOME/mesh.json`` when
``flywheel up`` wrote one, else from the FLYWHEEL_<SERVICE>_GRPC_HOST / _GRPC_PORT
variables and the default ports (a compose or Kubernetes mesh reached through its ports).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from flywheel.common.grpc.client import aio_channel
from flywheel.common.settings import CommonSettings, GrpcSecuritySettings
from flywheel.oip import grpc_service_pb2 as oip
from flywheel.oip import grpc_service_pb2_grpc as oip_grpc
from flywheel.v1 import (
    common_pb2,
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

SERVICE_NAMES = ("ingest", "features", "inference", "feedback", "training")


@dataclass(frozen=True)
class MeshEndpoints:
    """Where the demo finds the services, the broker (to audit the labeled topic), the
    namespace of the topics, and the model registry (for the bring-your-own-model path)."""

    grpc: dict[str, str]
    kafka_bootstrap: str
    namespace: str
    registry_uri: str
    spec_path: str
    # How the services are dialled (TLS, client certificate, token); None: plain text.
    security: GrpcSecuritySettings | None = None

    @classmethod
    def discover(cls, home: Path, environ: Mapping[str, str] | None = None) -> MeshEndpoints:
        from flywheel.mesh import state as mesh_state

        recorded = mesh_state.load(home / "mesh.json")
        if recorded is not None:
            return cls(
                grpc={name: s.grpc_address for name, s in recorded.services.items()},
                kafka_bootstrap=recorded.kafka_bootstrap,
                namespace=recorded.namespace,
                registry_uri=recorded.registry_uri,
                spec_path=recorded.spec_path,
                security=mesh_state.client_security(recorded) or CommonSettings().grpc_security,
            )
        from flywheel.mesh.services import SERVICES

        env = os.environ if environ is None else environ
        common = CommonSettings()
        grpc_targets = {}
        for service in SERVICES:
            host = env.get(f"{service.env_prefix}GRPC_HOST", "127.0.0.1")
            port = env.get(service.grpc_port_env) or str(service.grpc_port)
            grpc_targets[service.name] = f"{host}:{port}"
        return cls(
            grpc=grpc_targets,
            kafka_bootstrap=common.kafka_bootstrap,
            namespace=common.namespace,
            registry_uri=common.registry_uri,
            spec_path=str(common.spec_path),
            security=common.grpc_security,
        )


class MeshClients:
    """One channel per service; use as ``async with MeshClients(endpoints) as clients``."""

    def __init__(self, endpoints: MeshEndpoints, deadline_s: float = 10.0) -> None:
        self.endpoints = endpoints
        self.deadline_s = deadline_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def __aenter__(self) -> MeshClients:
        for name in SERVICE_NAMES:
            self._channels[name] = aio_channel(self.endpoints.grpc[name],
                                               security=self.endpoints.security)
        self.ingest = ingest_pb2_grpc.IngestServiceStub(self._channels["ingest"])
        self.features = features_pb2_grpc.FeatureStoreServiceStub(self._channels["features"])
        self.predictions = prediction_pb2_grpc.PredictionServiceStub(self._channels["inference"])
        self.oip = oip_grpc.GRPCInferenceServiceStub(self._channels["inference"])
        self.feedback = feedback_pb2_grpc.FeedbackServiceStub(self._channels["feedback"])
        self.training = training_pb2_grpc.TrainingServiceStub(self._channels["training"])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def ingest_stream(
        self, batches: AsyncIterator[ingest_pb2.IngestStreamRequest], deadline_s: float
    ) -> ingest_pb2.IngestStreamResponse:
        return await self.ingest.IngestStream(batches, timeout=deadline_s)

    async def predict(self, model: str, entity_ids: Sequence[str]) -> prediction_pb2.PredictResponse:
        request = prediction_pb2.PredictRequest(
            model=model, entity_ids=prediction_pb2.EntityIds(ids=list(entity_ids))
        )
        return await self.predictions.Predict(request, timeout=self.deadline_s)

    async def record_feedback(
        self, items: Sequence[feedback_pb2.RecordFeedbackRequest]
    ) -> feedback_pb2.RecordFeedbackBatchResponse:
        request = feedback_pb2.RecordFeedbackBatchRequest(feedback=list(items))
        return await self.feedback.RecordFeedbackBatch(request, timeout=self.deadline_s)

    async def online_features(
        self, entity_type: str, entity_ids: Sequence[str], feature_names: Sequence[str]
    ) -> features_pb2.GetOnlineFeaturesResponse:
        request = features_pb2.GetOnlineFeaturesRequest(
            entity_type=entity_type, entity_ids=list(entity_ids), feature_names=list(feature_names)
        )
        return await self.features.GetOnlineFeatures(request, timeout=self.deadline_s)

    async def model_ready(self, name: str, version: int) -> bool:
        request = oip.ModelReadyRequest(name=name, version=str(version) if version else "")
        try:
            return (await self.oip.ModelReady(request, timeout=self.deadline_s)).ready
        except grpc.aio.AioRpcError:
            return False

    async def list_versions(self, model: str) -> training_pb2.ListModelVersionsResponse:
        request = training_pb2.ListModelVersionsRequest(model_name=model)
        return await self.training.ListModelVersions(request, timeout=self.deadline_s)

    async def training_run(self, run_id: str) -> training_pb2.TrainingRun:
        request = training_pb2.GetTrainingRunRequest(run_id=run_id)
        return (await self.training.GetTrainingRun(request, timeout=self.deadline_s)).run

    async def promote(
        self, model: str, version: int, reason: str
    ) -> training_pb2.PromoteModelVersionResponse:
        request = training_pb2.PromoteModelVersionRequest(
            model_name=model, version=version, alias="champion", reason=reason
        )
        return await self.training.PromoteModelVersion(request, timeout=self.deadline_s)


def feedback_request(prediction_id: str, label: int | float) -> feedback_pb2.RecordFeedbackRequest:
    """Application feedback (an int is a class, a float a regression value); the idempotency
    key makes a retried send the same feedback."""
    truth = (common_pb2.Label(value=label) if isinstance(label, float)
             else common_pb2.Label(class_label=int(label)))
    return feedback_pb2.RecordFeedbackRequest(
        prediction_id=prediction_id,
        label=truth,
        source=common_pb2.LABEL_SOURCE_APPLICATION,
        idempotency_key=f"demo-{prediction_id}",
    )


def describe_rpc_error(error: grpc.aio.AioRpcError) -> str:
    """One line for the user: the status and the server's message."""
    return f"{error.code().name}: {error.details()}"
