"""gRPC adapter to flywheel.v1.FeatureStoreService.GetOnlineFeatures (every call has a deadline)."""

from __future__ import annotations

import grpc

from flywheel.common.context import current_request_id, current_traceparent
from flywheel.common.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from flywheel.common.grpc.client import aio_channel
from flywheel.common.grpc.interceptors import REQUEST_ID_KEY, TRACEPARENT_KEY
from flywheel.inference.predictor import StoredEntity
from flywheel.v1 import common_pb2, features_pb2, features_pb2_grpc

FOUND = features_pb2.FEATURE_STATUS_FOUND


def numeric(value: common_pb2.FeatureValue) -> float | None:
    kind = value.WhichOneof("kind")
    if kind == "double_value":
        return value.double_value
    if kind == "int64_value":
        return float(value.int64_value)
    if kind == "bool_value":
        return 1.0 if value.bool_value else 0.0
    return None


class FeatureStoreClient:
    def __init__(self, target: str, timeout_s: float, max_message_bytes: int) -> None:
        self._target = target
        self._timeout_s = timeout_s
        self._channel = aio_channel(target, max_message_bytes)
        self._stub = features_pb2_grpc.FeatureStoreServiceStub(self._channel)

    async def fetch(
        self, entity_type: str, entity_ids: list[str], feature_names: list[str]
    ) -> list[StoredEntity]:
        request = features_pb2.GetOnlineFeaturesRequest(
            entity_type=entity_type, entity_ids=entity_ids, feature_names=feature_names
        )
        metadata = ((REQUEST_ID_KEY, current_request_id()), (TRACEPARENT_KEY, current_traceparent()))
        try:
            reply = await self._stub.GetOnlineFeatures(
                request, timeout=self._timeout_s, metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(
                    f"the feature store did not answer within {self._timeout_s}s"
                ) from None
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                raise FailedPrecondition(
                    f"the feature store refused the model's features: {error.details()}"
                ) from None
            raise Unavailable(f"the feature store is unavailable: {error.details()}") from None
        by_id = {entity.entity_id: entity for entity in reply.entities}
        result = []
        for entity_id in entity_ids:
            entity = by_id.get(entity_id)
            if entity is None or entity.status != FOUND:
                result.append(StoredEntity(entity_id, False, ()))
            else:
                result.append(StoredEntity(entity_id, True, [numeric(v) for v in entity.values]))
        return result

    async def close(self) -> None:
        await self._channel.close()
