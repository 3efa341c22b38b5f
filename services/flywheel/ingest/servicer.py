"""gRPC adapter of the ingest service: request bytes in, `Ingestor` call, protobuf out.

Both methods take their requests undecoded (no request deserializer): the ingestor screens
the encoded events and publishes their bytes as they came.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc

from flywheel.ingest.core import Ingestor, Outcome
from flywheel.v1 import ingest_pb2, ingest_pb2_grpc

SERVICE = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


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

    async def Ingest(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.IngestResponse:
        """`request`: an encoded IngestRequest."""
        outcome = await self._ingestor.ingest(
            request, budget_of(context, self._ack_timeout_s, self._margin_s)
        )
        return ingest_pb2.IngestResponse(
            accepted_count=outcome.accepted,
            rejections=_rejections(outcome),
            rejected_count=outcome.rejected,
            accepted_event_ids=outcome.accepted_event_ids,
        )

    async def IngestStream(
        self,
        request_iterator: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
    ) -> ingest_pb2.IngestStreamResponse:
        """`request_iterator`: encoded IngestStreamRequests."""
        outcome = await self._ingestor.ingest_stream(
            request_iterator, budget_of(context, self._ack_timeout_s, self._margin_s)
        )
        return ingest_pb2.IngestStreamResponse(
            accepted_count=outcome.accepted,
            rejections=_rejections(outcome),
            rejected_count=outcome.rejected,
            batches=outcome.batches,
        )


def add_to_server(servicer: IngestServicer, server: grpc.aio.Server) -> None:
    """Registers the service as the generated code would, but with undecoded requests."""
    handlers = {
        "Ingest": grpc.unary_unary_rpc_method_handler(
            servicer.Ingest,
            request_deserializer=None,
            response_serializer=ingest_pb2.IngestResponse.SerializeToString,
        ),
        "IngestStream": grpc.stream_unary_rpc_method_handler(
            servicer.IngestStream,
            request_deserializer=None,
            response_serializer=ingest_pb2.IngestStreamResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
