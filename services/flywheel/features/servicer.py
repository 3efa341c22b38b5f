"""gRPC adapter of the feature store: protobuf in, `FeatureStore` call, protobuf out.

GetOnlineFeatures answers bytes: the store assembles the encoded reply (most of it inside
Redis), and it goes to the caller as it is, with no response serializer (see `add_to_server`),
instead of being parsed into a message for grpc to serialize again.
"""

from __future__ import annotations

import grpc

from flywheel.common.spec import Dtype
from flywheel.features.core import FeatureStore
from flywheel.v1 import features_pb2, features_pb2_grpc, ingest_pb2

SERVICE = features_pb2.DESCRIPTOR.services_by_name["FeatureStoreService"].full_name

_DTYPES = {
    Dtype.DOUBLE: features_pb2.FEATURE_DTYPE_DOUBLE,
    Dtype.INT64: features_pb2.FEATURE_DTYPE_INT64,
    Dtype.BOOL: features_pb2.FEATURE_DTYPE_BOOL,
    Dtype.STRING: features_pb2.FEATURE_DTYPE_STRING,
}


class FeatureStoreServicer(features_pb2_grpc.FeatureStoreServiceServicer):
    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    async def GetOnlineFeatures(
        self, request: features_pb2.GetOnlineFeaturesRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """The encoded GetOnlineFeaturesResponse (registered without a serializer)."""
        return await self._store.get_online_features(
            request.entity_type, request.entity_ids, request.feature_names
        )

    async def WriteFeatures(
        self, request: features_pb2.WriteFeaturesRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.WriteFeaturesResponse:
        outcome = await self._store.write_features(request.rows)
        return features_pb2.WriteFeaturesResponse(
            written_count=outcome.written,
            stale_count=outcome.stale,
            rejections=[
                ingest_pb2.EventRejection(
                    index=r.index, event_id=r.event_id, field=r.problem.field,
                    reason=r.problem.reason,
                )
                for r in outcome.rejections
            ],
        )

    async def SearchSimilar(
        self, request: features_pb2.SearchSimilarRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.SearchSimilarResponse:
        query = request.WhichOneof("query")
        neighbors = self._store.search_similar(
            request.entity_type,
            request.vector.values if query == "vector" else None,
            request.entity_id if query == "entity_id" else None,
            request.k,
        )
        return features_pb2.SearchSimilarResponse(
            neighbors=[features_pb2.Neighbor(entity_id=e, distance=d) for e, d in neighbors]
        )

    async def GetFeatureSchema(
        self, request: features_pb2.GetFeatureSchemaRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.GetFeatureSchemaResponse:
        entity = self._store.schema(request.entity_type)
        return features_pb2.GetFeatureSchemaResponse(
            entity_type=entity.name,
            features=[
                features_pb2.FeatureDefinition(
                    name=f.name, dtype=_DTYPES[f.dtype], allow_nan=f.allow_nan
                )
                for f in entity.features
            ],
            vector_dimension=entity.vector.dimension if entity.vector else 0,
        )


def add_to_server(servicer: FeatureStoreServicer, server: grpc.aio.Server) -> None:
    """Registers the service as the generated code would, but GetOnlineFeatures answers the
    bytes it is handed (no response serializer)."""
    handlers = {
        "GetOnlineFeatures": grpc.unary_unary_rpc_method_handler(
            servicer.GetOnlineFeatures,
            request_deserializer=features_pb2.GetOnlineFeaturesRequest.FromString,
            response_serializer=None,
        ),
        "WriteFeatures": grpc.unary_unary_rpc_method_handler(
            servicer.WriteFeatures,
            request_deserializer=features_pb2.WriteFeaturesRequest.FromString,
            response_serializer=features_pb2.WriteFeaturesResponse.SerializeToString,
        ),
        "SearchSimilar": grpc.unary_unary_rpc_method_handler(
            servicer.SearchSimilar,
            request_deserializer=features_pb2.SearchSimilarRequest.FromString,
            response_serializer=features_pb2.SearchSimilarResponse.SerializeToString,
        ),
        "GetFeatureSchema": grpc.unary_unary_rpc_method_handler(
            servicer.GetFeatureSchema,
            request_deserializer=features_pb2.GetFeatureSchemaRequest.FromString,
            response_serializer=features_pb2.GetFeatureSchemaResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
