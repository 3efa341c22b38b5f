"""gRPC adapter of `flywheel.v1.PredictionService`.

Predict(model = "name" or "name@alias", version = 0 or any registered version (loaded on
demand when neither champion nor shadow), entity_ids or rows): one RowPrediction per input
row, in order. A row the store cannot fill is not an error of the call: ENTITY_NOT_FOUND (no
features stored for the id) or FEATURE_MISSING (a model feature absent, not a finite number,
or of the wrong kind; `detail` names it), with no prediction id. Unknown model or version:
NOT_FOUND; a version refused at load: FAILED_PRECONDITION with the reason; no input, a bad
row width or a NaN/Inf row: INVALID_ARGUMENT; feature store unreachable, or not answering
within the caller's deadline less a margin: UNAVAILABLE naming it (see
`flywheel.common.dependency`); Kafka unreachable: UNAVAILABLE. The answer comes after Kafka
acknowledged every prediction record of the call (FLYWHEEL_INFERENCE_LOG_WAIT_FOR_ACK).
"""

from __future__ import annotations

import grpc

from flywheel.inference.predictor import Predictor
from flywheel.v1 import prediction_pb2, prediction_pb2_grpc

SERVICE_NAME = prediction_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name


class PredictionServicer(prediction_pb2_grpc.PredictionServiceServicer):
    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor

    async def Predict(self, request: prediction_pb2.PredictRequest,
                      context: grpc.aio.ServicerContext) -> prediction_pb2.PredictResponse:
        which = request.WhichOneof("input")
        result = await self._predictor.predict(
            request.model,
            request.version,
            entity_ids=list(request.entity_ids.ids) if which == "entity_ids" else None,
            rows=[list(r.values) for r in request.rows.rows] if which == "rows" else None,
        )
        response = prediction_pb2.PredictResponse(
            model_name=result.model_name, model_version=result.model_version
        )
        add = response.predictions.add
        for row in result.rows:
            add(prediction_id=row.prediction_id, entity_id=row.entity_id, status=row.status,
                output=row.output, detail=row.detail)
        return response
