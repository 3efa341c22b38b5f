"""gRPC adapter of FeedbackService: protobuf in, recorder call, protobuf out."""

from __future__ import annotations

from flywheel.common.errors import InvalidArgument, Unavailable
from flywheel.feedback.recorder import FeedbackRecorder, Rejection
from flywheel.v1 import feedback_pb2, feedback_pb2_grpc


def _batch_response(accepted: int, rejections: list[Rejection]):
    return feedback_pb2.RecordFeedbackBatchResponse(
        accepted_count=accepted,
        rejections=[
            feedback_pb2.FeedbackRejection(
                index=r.index, prediction_id=r.prediction_id, field=r.field, reason=r.reason
            )
            for r in rejections
        ],
    )


class FeedbackServicer(feedback_pb2_grpc.FeedbackServiceServicer):
    def __init__(self, recorder: FeedbackRecorder, max_batch: int, stream_chunk: int) -> None:
        self._recorder = recorder
        self._max_batch = max_batch
        self._chunk = stream_chunk

    async def RecordFeedback(self, request, context):
        key = await self._recorder.record_one(request)
        return feedback_pb2.RecordFeedbackResponse(idempotency_key=key)

    async def RecordFeedbackBatch(self, request, context):
        if len(request.feedback) > self._max_batch:
            raise InvalidArgument(
                f"at most {self._max_batch} feedback items per batch", field="feedback"
            )
        keys, rejections = await self._recorder.record_many(request.feedback)
        return _batch_response(len(keys), rejections)

    async def RecordFeedbackStream(self, request_iterator, context):
        accepted, rejections, chunk, seen = 0, [], [], 0
        try:
            async for request in request_iterator:
                chunk.append(request)
                if len(chunk) >= self._chunk:
                    keys, rejected = await self._recorder.record_many(chunk, first_index=seen)
                    accepted, seen = accepted + len(keys), seen + len(chunk)
                    rejections.extend(rejected)
                    chunk = []
            if chunk:
                keys, rejected = await self._recorder.record_many(chunk, first_index=seen)
                accepted += len(keys)
                rejections.extend(rejected)
        except Unavailable as error:
            # The chunks before the failing one stay recorded: say how far the stream got.
            raise Unavailable(f"{error.message} (the stream's first {seen} items were "
                              f"taken before that, {accepted} of them accepted)") from None
        return _batch_response(accepted, rejections)
