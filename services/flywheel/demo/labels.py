"""Ground truth waiting for its time, sent back through RecordFeedbackBatch as it falls due.

A batch the call fails for goes back into the queue, due again shortly, with the same
idempotency keys: a retried send is the same feedback, never a duplicate.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import grpc

from flywheel.demo.clients import MeshClients, describe_rpc_error, feedback_request

MAX_FEEDBACK = 500
RETRY_S = 0.5


@dataclass
class SentLabels:
    """What one send did: the prediction ids accepted, those refused (with the field and the
    reason), or the error of a failed call (everything then queued again)."""

    accepted: list[str] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    error: str = ""


class LabelQueue:
    def __init__(self) -> None:
        self._due: list[tuple[float, int, str, int | float]] = []

    def put(self, due_at: float, order: int, prediction_id: str, label: int | float) -> None:
        heapq.heappush(self._due, (due_at, order, prediction_id, label))

    def __len__(self) -> int:
        return len(self._due)

    async def send_due(self, clients: MeshClients, now: float) -> SentLabels:
        batch = []
        while self._due and self._due[0][0] <= now and len(batch) < MAX_FEEDBACK:
            batch.append(heapq.heappop(self._due))
        if not batch:
            return SentLabels()
        try:
            response = await clients.record_feedback(
                [feedback_request(pid, label) for _, _, pid, label in batch])
        except grpc.aio.AioRpcError as exc:
            for _, order, pid, label in batch:
                self.put(now + RETRY_S, order, pid, label)
            return SentLabels(error=f"RecordFeedbackBatch failed: {describe_rpc_error(exc)}")
        refused = {r.index: (r.field, r.reason) for r in response.rejections}
        out = SentLabels()
        for position, (_, _, pid, _) in enumerate(batch):
            if position in refused:
                out.refused.append((pid, *refused[position]))
            else:
                out.accepted.append(pid)
        return out
