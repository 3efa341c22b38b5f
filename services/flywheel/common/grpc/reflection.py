"""Server reflection under both names clients ask for: `grpc.reflection.v1` (what current
grpcurl and Postman try first) and `grpc.reflection.v1alpha`.

grpcio-reflection ships only v1alpha. The two versions are one protocol: the v1 messages are
the v1alpha ones under a new package, field for field, so one servicer answers both, its
method registered a second time under the v1 service name (the wire carries only the method
path and the message bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serves reflection (both versions) of `service_names` and of itself."""
    servicer = reflection.aio.ReflectionServicer(
        tuple(dict.fromkeys([*service_names, V1ALPHA_SERVICE_NAME, V1_SERVICE_NAME])))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME, {"ServerReflectionInfo": info}),))
