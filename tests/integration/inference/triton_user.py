"""A tritonclient user, run as its own process by test_oip.py.

tritonclient's generated protocol module and the server's (flywheel.oip) both define the
protobuf package `inference` and cannot share one process's descriptor pool, so the client
lives here, exactly as a user's program would, and prints what it saw as one JSON object.

    python triton_user.py <host:port> happy|bad|byo|extensions <max_message_bytes>
"""

from __future__ import annotations

import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

N_FEATURES = 24


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, N_FEATURES)).astype(np.float32)


def infer_input(x: np.ndarray, datatype: str = "FP32", shape=None, name="features"):
    tensor = triton.InferInput(name, list(shape or x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def happy(client: triton.InferenceServerClient, target: str) -> dict:
    out: dict = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": {v: client.is_model_ready("churn", v) for v in ("", "1", "2", "3")},
        "unknown_ready": client.is_model_ready("nope"),
        "server_name": client.get_server_metadata().name,
    }
    meta = client.get_model_metadata("churn")
    out["metadata"] = {
        "name": meta.name, "versions": list(meta.versions), "platform": meta.platform,
        "inputs": [[t.name, t.datatype, list(t.shape)] for t in meta.inputs],
        "outputs": [[t.name, t.datatype, list(t.shape)] for t in meta.outputs],
    }
    out["raw"] = {}
    for version in ("", "1", "2"):
        x = rows(5, seed=3)
        result = client.infer(
            "churn", [infer_input(x)], model_version=version, request_id="r-1",
            outputs=[triton.InferRequestedOutput("probabilities"),
                     triton.InferRequestedOutput("label")],
        )
        response = result.get_response()
        out["raw"][version] = {
            "x": x.tolist(), "label": result.as_numpy("label").tolist(),
            "probabilities": result.as_numpy("probabilities").tolist(),
            "model_version": response.model_version, "id": response.id,
            "raw_outputs": len(response.raw_output_contents),
        }
    # Typed contents, through tritonclient's own protocol stubs.
    x = rows(3, seed=4)
    request = service_pb2.ModelInferRequest(model_name="churn")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    with grpc.insecure_channel(target) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    # (tritonclient's InferResult.as_numpy reads only raw or BYTES contents.)
    by_name = {o.name: o for o in response.outputs}
    out["typed"] = {
        "x": x.tolist(), "raw_outputs": len(response.raw_output_contents),
        "label": list(by_name["label"].contents.int64_contents),
        "probabilities": np.array(by_name["probabilities"].contents.fp32_contents)
        .reshape(list(by_name["probabilities"].shape)).tolist(),
    }
    return out


def _with_nan() -> np.ndarray:
    x = rows(2)
    x[1, 3] = np.nan
    return x


def _with_inf() -> np.ndarray:
    x = rows(2)
    x[0, 0] = np.inf
    return x


def bad_cases(max_message: int) -> dict:
    big = max_message // (4 * N_FEATURES) + 8
    return {
        "wrong-dtype": ("churn", "", lambda: [infer_input(rows(2).astype(np.float64), "FP64")]),
        "wrong-width": ("churn", "", lambda: [infer_input(rows(2)[:, :5].copy())]),
        "wrong-rank": ("churn", "", lambda: [infer_input(rows(2).ravel().copy())]),
        "empty-batch": ("churn", "", lambda: [infer_input(rows(0))]),
        "nan": ("churn", "", lambda: [infer_input(_with_nan())]),
        "inf": ("churn", "", lambda: [infer_input(_with_inf())]),
        "unknown-input": ("churn", "", lambda: [infer_input(rows(1), name="x")]),
        "no-inputs": ("churn", "", lambda: []),
        "unknown-model": ("nope", "", lambda: [infer_input(rows(1))]),
        "unknown-version": ("churn", "9", lambda: [infer_input(rows(1))]),
        "non-numeric-version": ("churn", "latest", lambda: [infer_input(rows(1))]),
        "oversize": ("churn", "", lambda: [infer_input(rows(big))]),
    }


def bad(client: triton.InferenceServerClient, target: str, max_message: int) -> dict:
    out = {}
    for case, (model, version, inputs) in bad_cases(max_message).items():
        try:
            client.infer(model, inputs(), model_version=version)
            out[case] = {"status": "OK", "message": ""}
        except InferenceServerException as error:
            out[case] = {"status": str(error.status()).removeprefix("StatusCode."),
                         "message": error.message() or ""}
    # Bytes that disagree with the declared shape: tritonclient checks this itself, so the
    # request is built with its protocol stubs.
    request = service_pb2.ModelInferRequest(model_name="churn")
    request.inputs.add(name="features", datatype="FP32", shape=[3, N_FEATURES])
    request.raw_input_contents.append(rows(2).tobytes())
    with grpc.insecure_channel(target) as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
            out["size-mismatch"] = {"status": "OK", "message": ""}
        except grpc.RpcError as error:
            out["size-mismatch"] = {"status": error.code().name, "message": error.details()}
    try:
        client.get_model_metadata("nope")
        out["metadata-unknown-model"] = {"status": "OK", "message": ""}
    except InferenceServerException as error:
        out["metadata-unknown-model"] = {"status": str(error.status()).removeprefix("StatusCode."),
                                         "message": error.message() or ""}
    return out


def byo(client: triton.InferenceServerClient) -> dict:
    """Models brought from elsewhere (test_byo.py): two inputs, and a score per row served
    as the champion and as a pinned older version."""
    rng = np.random.default_rng(9)
    dense = rng.normal(size=(6, 2)).astype(np.float32)
    extra = rng.normal(size=6)
    result = client.infer("pair", [infer_input(dense, name="dense"),
                                   infer_input(extra, "FP64", name="extra")])
    out = {"pair": {"dense": dense.tolist(), "extra": extra.tolist(),
                    "label": result.as_numpy("label").tolist(),
                    "probabilities": result.as_numpy("probabilities").tolist(),
                    "model_version": result.get_response().model_version}}
    x = rng.normal(size=(5, 3)).astype(np.float32)
    for version in ("", "1"):
        result = client.infer("score", [infer_input(x, name="x")], model_version=version)
        out[f"score:{version}"] = {"x": x.tolist(), "score": result.as_numpy("score").tolist(),
                                   "model_version": result.get_response().model_version}
    out["ready_after"] = {v: client.is_model_ready("score", v) for v in ("1", "2", "9")}
    return out


def _index(client: triton.InferenceServerClient, target: str = "") -> list[list[str]]:
    """The index through tritonclient; with `target`, only the ready versions (a request
    field tritonclient does not expose: its protocol stubs ask)."""
    if target:
        with grpc.insecure_channel(target) as channel:
            models = service_pb2_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(
                service_pb2.RepositoryIndexRequest(ready=True), timeout=10).models
    else:
        models = client.get_model_repository_index().models
    return [[m.name, m.version, m.state] for m in models]


def _statistics(client: triton.InferenceServerClient, name: str = "", version: str = "") -> dict:
    return {f"{s.name}:{s.version}": {
        "inference_count": s.inference_count, "execution_count": s.execution_count,
        "success": s.inference_stats.success.count, "success_ns": s.inference_stats.success.ns,
        "fail": s.inference_stats.fail.count, "last_inference": s.last_inference,
        "batches": {b.batch_size: b.compute_infer.count for b in s.batch_stats},
    } for s in client.get_inference_statistics(name, version).model_stats}


def _status_of(call) -> str:
    try:
        call()
    except InferenceServerException as error:
        return str(error.status()).removeprefix("StatusCode.")
    return "OK"


def extensions(client: triton.InferenceServerClient, target: str) -> dict:
    """The model repository and statistics extensions (test_oip_extensions.py)."""
    out: dict = {"extensions": list(client.get_server_metadata().extensions),
                 "index": _index(client), "ready_index": _index(client, target)}
    for _ in range(3):
        client.infer("churn", [infer_input(rows(4))])
    client.infer("churn", [infer_input(rows(2))], model_version="2")
    out["bad_infer"] = _status_of(lambda: client.infer("churn", [infer_input(rows(2)[:, :5].copy())]))
    out["statistics"] = _statistics(client, "churn")
    out["statistics_v2"] = _statistics(client, "churn", "2")
    client.unload_model("churn")
    out["after_unload"] = {"ready": client.is_model_ready("churn"),
                           "ready_v1": client.is_model_ready("churn", "1"),
                           "index": _index(client),
                           "infer": _status_of(lambda: client.infer("churn", [infer_input(rows(1))]))}
    client.load_model("churn")
    out["after_load"] = {"ready": client.is_model_ready("churn"),
                         "ready_v2": client.is_model_ready("churn", "2"),
                         "ready_index": _index(client, target)}
    out["load_unknown"] = _status_of(lambda: client.load_model("nope"))
    out["unload_unknown"] = _status_of(lambda: client.unload_model("nope"))
    out["statistics_unknown"] = _status_of(lambda: client.get_inference_statistics("nope"))
    return out


def main() -> None:
    target, scenario, max_message = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = triton.InferenceServerClient(target)
    try:
        if scenario == "happy":
            result = happy(client, target)
        elif scenario == "byo":
            result = byo(client)
        elif scenario == "extensions":
            result = extensions(client, target)
        else:
            result = bad(client, target, max_message)
    finally:
        client.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
