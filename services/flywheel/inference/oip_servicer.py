"""gRPC adapter of `inference.GRPCInferenceService` (the Open Inference Protocol).

Versions are decimal strings; an empty version means the champion. Another registered
version is loaded on demand for the request that names it (pinned; see model_store), and
ModelReady is true for a version loaded now. Unknown model or version: NOT_FOUND; a version
refused at load: FAILED_PRECONDITION; a request that does not match the model's signature: INVALID_ARGUMENT;
no model loaded yet: UNAVAILABLE; a message over the size limit is refused by gRPC itself
with RESOURCE_EXHAUSTED. ModelInfer is a raw tensor endpoint: it is not logged to the
predictions topic (Predict is the logged, entity-keyed path).

Two extensions of the protocol are served, as Triton does. Statistics (`ModelStatistics`):
per model version, the requests that succeeded and failed (ModelInfer and Predict) with their
cumulative times, rows inferred and session runs. Model repository (`RepositoryIndex`,
`RepositoryModelLoad`, `RepositoryModelUnload`): the index lists every version of the
registry, READY when loaded now; unload stops serving a model (ModelReady false, calls
FAILED_PRECONDITION) until load brings it back at the registry's aliases. Load and unload
change what this replica serves, never the registry.

ModelInfer answers the encoded ModelInferResponse (oip_codec assembles a raw answer as bytes),
so `add_to_server` registers it without a response serializer; every other method is
registered as the generated code does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc

from flywheel import __version__
from flywheel.common.errors import FlywheelError, InvalidArgument, NotFound
from flywheel.common.registry import ModelRegistry
from flywheel.inference.model_store import ModelStore
from flywheel.inference.oip_codec import (
    decode_request,
    encode_response,
    parse_version,
    plan_of,
    tensor_metadata,
)
from flywheel.inference.statistics import Statistics, VersionStatistics
from flywheel.oip import grpc_service_pb2 as oip
from flywheel.oip import grpc_service_pb2_grpc as oip_grpc
from flywheel.v1 import common_pb2

SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["model_repository", "statistics"]
# The one repository: the registry.
REPOSITORY = "registry"

_LIVE = oip.ServerLiveResponse(live=True)
_READY = oip.ServerReadyResponse(ready=True)
_NOT_READY = oip.ServerReadyResponse(ready=False)
_MODEL_READY = oip.ModelReadyResponse(ready=True)
_MODEL_NOT_READY = oip.ModelReadyResponse(ready=False)


class OipServicer(oip_grpc.GRPCInferenceServiceServicer):
    def __init__(self, store: ModelStore, ready: Callable[[], bool], registry: ModelRegistry,
                 statistics: Statistics) -> None:
        self._store = store
        self._ready = ready
        self._registry = registry
        self._statistics = statistics
        self._server_metadata = oip.ServerMetadataResponse(
            name="flywheel-inference", version=__version__, extensions=EXTENSIONS
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
        statistics = self._statistics.of(name, served.version)
        started_ns = time.perf_counter_ns()
        try:
            plan = plan_of(signature)
            decoded = decode_request(request, signature, plan)
            outputs = await served.batcher.infer(decoded.feeds)
            answer = encode_response(request, served.version_text, signature, decoded, outputs,
                                     plan)
        except BaseException:
            statistics.failed(started_ns)
            raise
        statistics.succeeded(started_ns, outputs[0].shape[0] if outputs and outputs[0].ndim
                             else 1)
        return answer

    # -- statistics extension -----------------------------------------------------------------

    async def ModelStatistics(self, request, context: grpc.aio.ServicerContext):
        version = parse_version(request.version)
        if request.name and not await asyncio.to_thread(self._registry.versions, request.name):
            raise NotFound(f"unknown model {request.name!r}", field="name")
        return oip.ModelStatisticsResponse(model_stats=[
            _statistics_of(name, number, figures)
            for name, number, figures in self._statistics.versions(request.name, version)])

    # -- model repository extension -----------------------------------------------------------

    async def RepositoryIndex(self, request, context: grpc.aio.ServicerContext):
        _check_repository(request.repository_name)
        index = await asyncio.to_thread(self._index)
        return oip.RepositoryIndexResponse(models=[
            entry for entry in index if not request.ready or entry.state == "READY"])

    async def RepositoryModelLoad(self, request, context: grpc.aio.ServicerContext):
        _check_repository(request.repository_name)
        await self._store.load(_model_name(request))
        return oip.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context: grpc.aio.ServicerContext):
        _check_repository(request.repository_name)
        await self._store.unload(_model_name(request))
        return oip.RepositoryModelUnloadResponse()

    def _index(self) -> list:
        """Every version of the registry, READY when loaded now (blocking: a worker thread)."""
        entries = []
        for name in self._registry.model_names():
            unloaded = name in self._store.unloaded
            for meta in self._registry.versions(name):
                if self._store.resident(name, meta.version) is not None:
                    state, reason = "READY", ""
                elif meta.status == common_pb2.MODEL_VERSION_STATUS_REFUSED:
                    state, reason = "UNAVAILABLE", f"refused: {meta.status_reason}"
                else:
                    state = "UNLOADED" if unloaded else "UNAVAILABLE"
                    reason = "unloaded on request" if unloaded else "not loaded"
                entries.append(oip.RepositoryIndexResponse.ModelIndex(
                    name=name, version=str(meta.version), state=state, reason=reason))
        return entries


def _check_repository(name: str) -> None:
    if name and name != REPOSITORY:
        raise NotFound(f"unknown repository {name!r} (the one repository is {REPOSITORY!r})",
                       field="repository_name")


def _model_name(request) -> str:
    if not request.model_name:
        raise InvalidArgument("model_name is required", field="model_name")
    return request.model_name


def _statistics_of(name: str, version: int, figures: VersionStatistics):
    return oip.ModelStatistics(
        name=name, version=str(version), last_inference=figures.last_inference_ms,
        inference_count=figures.inference_count, execution_count=figures.execution_count,
        inference_stats=oip.InferStatistics(
            success=oip.StatisticDuration(count=figures.success_count, ns=figures.success_ns),
            fail=oip.StatisticDuration(count=figures.fail_count, ns=figures.fail_ns),
        ),
        batch_stats=[oip.InferBatchStatistics(batch_size=size,
                                              compute_infer=oip.StatisticDuration(count=runs))
                     for size, runs in sorted(figures.runs_by_batch_size.items())],
    )


def add_to_server(servicer: OipServicer, server: grpc.aio.Server) -> None:
    """Registers the service as the generated code would, but ModelInfer answers the bytes it
    is handed (no response serializer)."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=getattr(oip, f"{name}Request").FromString,
            response_serializer=getattr(oip, f"{name}Response").SerializeToString,
        )
        for name in ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata",
                     "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad",
                     "RepositoryModelUnload")
    }
    handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
        servicer.ModelInfer,
        request_deserializer=oip.ModelInferRequest.FromString,
        response_serializer=None,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
