"""gRPC adapter of the ingest service: protobuf in, `Ingestor` call, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc

from flywheel.ingest.core import Ingestor, Outcome
from flywheel.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc


def budget_of(context: grpc.aio.ServicerContext, ceiling_s: float, margin_s: float) -> Callable[[], float]:
    """Seconds the server may still wait: the caller's deadline less a margin, capped."""

    def budget() -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return ceiling_s
        return min(ceiling_s, remaining - margin_s)

    return budget


def _rejections(outcome: Outcome) -> list[ingest_pb2.EventRejection]:
    return [
        ingest_pb2.EventRejection(
            index=r.index, event_id=r.event_id, field=r.problem.field, reason=r.problem.reason
        )
        for r in outcome.rejections
    ]


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, ingestor: Ingestor, ack_timeout_s: float, margin_s: float) -> None:
        self._ingestor = ingestor
        self._ack_timeout_s = ack_timeout_s
        self._margin_s = margin_s

    async def Ingest(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.IngestRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.IngestResponse:
        outcome = await self._ingestor.ingest(
            request.events, budget_of(context, self._ack_timeout_s, self._margin_s)
        )
        return ingest_pb2.IngestResponse(
            accepted_count=outcome.accepted,
            rejections=_rejections(outcome),
            accepted_event_ids=outcome.accepted_event_ids,
        )

    async def IngestStream(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[ingest_pb2.IngestStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> ingest_pb2.IngestStreamResponse:
        async def batches() -> AsyncIterator[list[events_pb2.Event]]:
            async for message in request_iterator:
                yield message.events

        outcome = await self._ingestor.ingest_stream(
            batches(), budget_of(context, self._ack_timeout_s, self._margin_s)
        )
        return ingest_pb2.IngestStreamResponse(
            accepted_count=outcome.accepted,
            rejections=_rejections(outcome),
            batches=outcome.batches,
        )
