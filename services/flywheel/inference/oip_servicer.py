"""gRPC adapter of `inference.GRPCInferenceService` (the Open Inference Protocol).

Versions are decimal strings; an empty version means the champion. Another registered
version is loaded on demand for the request that names it (pinned; see model_store), and
ModelReady is true for a version loaded now. Unknown model or version: NOT_FOUND; a version
refused at load: FAILED_PRECONDITION; a request that does not match the model's signature: INVALID_ARGUMENT;
no model loaded yet: UNAVAILABLE; a message over the size limit is refused by gRPC itself
with RESOURCE_EXHAUSTED. ModelInfer is a raw tensor endpoint: it is not logged to the
predictions topic (Predict is the logged, entity-keyed path).

ModelInfer answers the encoded ModelInferResponse (oip_codec assembles a raw answer as bytes),
so `add_to_server` registers it without a response serializer; every other method is
registered as the generated code does.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from flywheel import __version__
from flywheel.common.errors import FlywheelError, InvalidArgument
from flywheel.inference.model_store import ModelStore
from flywheel.inference.oip_codec import (
    decode_request,
    encode_response,
    parse_version,
    plan_of,
    tensor_metadata,
)
from flywheel.oip import grpc_service_pb2 as oip
from flywheel.oip import grpc_service_pb2_grpc as oip_grpc

SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
PLATFORM = "onnxruntime_onnx"

_LIVE = oip.ServerLiveResponse(live=True)
_READY = oip.ServerReadyResponse(ready=True)
_NOT_READY = oip.ServerReadyResponse(ready=False)
_MODEL_READY = oip.ModelReadyResponse(ready=True)
_MODEL_NOT_READY = oip.ModelReadyResponse(ready=False)


class OipServicer(oip_grpc.GRPCInferenceServiceServicer):
    def __init__(self, store: ModelStore, ready: Callable[[], bool]) -> None:
        self._store = store
        self._ready = ready
        self._server_metadata = oip.ServerMetadataResponse(
            name="flywheel-inference", version=__version__, extensions=[]
        )

    async def ServerLive(self, request, context: grpc.aio.ServicerContext):
        return _LIVE

    async def ServerReady(self, request, context: grpc.aio.ServicerContext):
        return _READY if self._ready() else _NOT_READY

    async def ServerMetadata(self, request, context: grpc.aio.ServicerContext):
        return self._server_metadata

    async def ModelReady(self, request, context: grpc.aio.ServicerContext):
        try:
            version = parse_version(request.version)
            if version:
                ready = self._store.resident(request.name, version) is not None
            else:
                ready = self._store.resolve(request.name) is not None
        except FlywheelError:
            return _MODEL_NOT_READY
        return _MODEL_READY if ready else _MODEL_NOT_READY

    async def ModelMetadata(self, request, context: grpc.aio.ServicerContext):
        served = await self._store.acquire(request.name, parse_version(request.version))
        versions = self._store.served_versions(request.name)
        signature = served.loaded.signature
        return oip.ModelMetadataResponse(
            name=request.name,
            versions=[str(v) for v in versions],
            platform=PLATFORM,
            inputs=tensor_metadata(signature.inputs),
            outputs=tensor_metadata(signature.outputs),
        )

    async def ModelInfer(self, request, context: grpc.aio.ServicerContext) -> bytes:
        """The encoded ModelInferResponse (registered without a response serializer)."""
        name = request.model_name
        if not name:
            raise InvalidArgument("model_name is required", field="model_name")
        version = request.model_version
        served = (await self._store.acquire(name, parse_version(version)) if version
                  else self._store.resolve(name))
        signature = served.loaded.signature
        plan = plan_of(signature)
        decoded = decode_request(request, signature, plan)
        outputs = await served.batcher.infer(decoded.feeds)
        return encode_response(request, served.version_text, signature, decoded, outputs, plan)


def add_to_server(servicer: OipServicer, server: grpc.aio.Server) -> None:
    """Registers the service as the generated code would, but ModelInfer answers the bytes it
    is handed (no response serializer)."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=getattr(oip, f"{name}Request").FromString,
            response_serializer=getattr(oip, f"{name}Response").SerializeToString,
        )
        for name in ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata")
    }
    handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
        servicer.ModelInfer,
        request_deserializer=oip.ModelInferRequest.FromString,
        response_serializer=None,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
