"""``flywheel bench inference``: the inference service against its peer and its limit.

One model (a 32-feature logistic regression in ONNX), one load generator (a lean grpc.aio
client sending pre-serialized requests, in its own process so client and server do not
share a GIL), the same concurrency and duration for every server measured in this run:

* peer: MLServer (from a separate venv, default ``.venv-bench``; skipped with a message when
  absent) serving the same ONNX file through a small custom runtime written at bench time,
  with batching off and with adaptive batching on. Targets: our single-row ModelInfer
  throughput >= 2x (off) and >= 1.5x (adaptive), p99 no worse.
* tracing: a second inference process with tracing on (every call sampled, its spans kept in
  memory: `FLYWHEEL_TRACE_MEMORY_SPANS`), in the same alternation as the untraced one.
  Target: traced throughput >= 0.85 of untraced, per payload.
* limit: a bare grpc.aio echo server answering the same bytes. Targets: single-row and
  256-row ModelInfer >= 0.7 of the echo's throughput; Predict by entity (with the real
  feature store, when it starts) >= 0.35 of the echo's throughput on Predict's payload.

Ours and the echo are measured in alternating rounds (echo, ours, echo, ours, ... for each
payload), both servers running throughout, and each side keeps its best round: a burst of
noise from other work on the machine then hits both sides alike instead of one. Before the
rounds, each server gets `--prime` seconds of unmeasured load on the payload: the first
seconds of a path (a new topic, a freshly started broker's JIT) are not its steady state.

Needs Kafka (FLYWHEEL_KAFKA_BOOTSTRAP) for the services; Redis (FLYWHEEL_REDIS_URL) for the
Predict part. The service processes are started here and stopped at the end.

Internal modes (used by the benchmark itself): ``python -m flywheel.bench.inference echo
<port>`` and ``python -m flywheel.bench.inference load <json args>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

N_FEATURES = 32
MODEL = "bench"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
PREDICT_METHOD = "/flywheel.v1.PredictionService/Predict"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds measured per round")
    parser.add_argument("--warmup", type=float, default=1.5,
                        help="seconds before measuring, per round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of the echo and ours per payload (best kept)")
    parser.add_argument("--prime", type=float, default=5.0,
                        help="seconds of unmeasured load per server and payload before the "
                        "rounds (a freshly started broker or JIT warms up)")
    parser.add_argument("--mlserver", default=".venv-bench/bin/mlserver",
                        help="the mlserver executable of a separate venv")
    parser.add_argument("--skip-peer", action="store_true", help="do not measure MLServer")
    parser.add_argument("--secure", action="store_true",
                        help="instead: ModelInfer with mutual TLS and a bearer token against "
                        "the same service in plain text, same run (the cost of security)")
    parser.add_argument("--skip-predict", action="store_true",
                        help="do not measure Predict by entity (needs the feature store)")
    parser.add_argument("--skip-tracing", action="store_true",
                        help="do not measure a second server with tracing on")


# -- helpers -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _infer_request(rows: int) -> bytes:
    import numpy as np

    from flywheel.oip import grpc_service_pb2 as oip

    x = np.random.default_rng(rows).normal(size=(rows, N_FEATURES)).astype(np.float32)
    request = oip.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="features", datatype="FP32", shape=[rows, N_FEATURES])
    request.raw_input_contents.append(x.tobytes())
    return request.SerializeToString()


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path,
             cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                   start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def _wait_ready(target: str, timeout_s: float, process: subprocess.Popen, log: Path,
                model: str = MODEL, security=None) -> None:
    import grpc

    from flywheel.common.grpc.client import sync_channel
    from flywheel.oip import grpc_service_pb2 as oip
    from flywheel.oip import grpc_service_pb2_grpc as oip_grpc

    deadline = time.monotonic() + timeout_s
    with sync_channel(target, security=security) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{target} exited: {log.read_text()[-2000:]}")
            try:
                if stub.ModelReady(oip.ModelReadyRequest(name=model), timeout=1).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{target} not ready after {timeout_s}s: {log.read_text()[-2000:]}")


def _measure(target: str, method: str, payload: bytes, args: argparse.Namespace, work: Path,
             tls: dict[str, str] | None = None) -> dict:
    """Runs the load generator in its own process; returns its figures. `tls`: the CA,
    client certificate, key and token files it dials with (plain text without)."""
    payload_file = work / f"payload-{secrets.token_hex(4)}.bin"
    payload_file.write_bytes(payload)
    spec = {"target": target, "method": method, "payload": str(payload_file),
            "concurrency": args.concurrency, "duration": args.duration, "warmup": args.warmup,
            "tls": tls}
    done = subprocess.run(
        [sys.executable, "-m", "flywheel.bench.inference", "load", json.dumps(spec)],
        capture_output=True, timeout=args.duration + args.warmup + 60, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.decode()[-2000:]}")
    figures = json.loads(done.stdout.decode().strip().splitlines()[-1])
    figures["payload_bytes"] = len(payload)
    return figures


def _alternating(targets: dict[str, str], case: str, method: str, payload: bytes,
                 args: argparse.Namespace, work: Path,
                 tls: dict[str, dict[str, str]] | None = None) -> dict[str, dict]:
    """`args.rounds` rounds of each target in turn on one payload; per target its best round
    (highest throughput), with every round's throughput beside it. `tls`: per target name,
    how the load generator dials it (see `_measure`)."""
    tls = tls or {}
    rounds: dict[str, list[dict]] = {name: [] for name in targets}
    if args.prime > 0:
        # Unmeasured: the first seconds of a path (a new topic, the broker's JIT, caches) are
        # not its steady state.
        priming = argparse.Namespace(**{**vars(args), "duration": args.prime, "warmup": 0.0})
        for name, target in targets.items():
            _measure(target, method, payload, priming, work, tls.get(name))
    for _ in range(max(1, args.rounds)):
        for name, target in targets.items():
            rounds[name].append(_measure(target, method, payload, args, work, tls.get(name)))
    best = {}
    for name, measured in rounds.items():
        top = max(measured, key=lambda figures: figures["rps"])
        best[f"{name}_{case}"] = {**top, "rounds_rps": [round(f["rps"]) for f in measured]}
    return best


# -- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from flywheel.bench import report
    from flywheel.common.registry import CHAMPION, ModelRegistry
    from flywheel.common.settings import CommonSettings
    from flywheel.inference.testing_models import (
        feature_names,
        logistic_regression_onnx,
    )

    report.with_defaults(args, add_arguments)
    if args.secure:
        from flywheel.bench._secure_inference import run_secure

        return run_secure(args)
    common = CommonSettings()
    work = Path(tempfile.mkdtemp(prefix="flywheel-bench-inference-"))
    namespace = f"bench{secrets.token_hex(4)}"
    registry = ModelRegistry(work / "registry")
    model_bytes = logistic_regression_onnx(N_FEATURES)
    meta = registry.register(MODEL, model_bytes, task=1, entity_type="customer",
                             feature_names=feature_names(N_FEATURES))
    registry.promote(MODEL, meta.version, CHAMPION)
    (work / "model.onnx").write_bytes(model_bytes)
    single, many = _infer_request(1), _infer_request(256)
    figures: dict[str, dict] = {}
    notes: list[str] = []
    env = {**os.environ, "FLYWHEEL_NAMESPACE": namespace, "FLYWHEEL_REGISTRY_URI": str(work / "registry"),
           "FLYWHEEL_LOG_LEVEL": "WARNING", "FLYWHEEL_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
           "FLYWHEEL_REDIS_URL": common.redis_url}
    try:
        features_target, features_ctx = _features(args, common, env, work, notes)
        with features_ctx, contextlib.ExitStack() as servers:
            echo_port = _free_port()
            servers.enter_context(_process(
                [sys.executable, "-m", "flywheel.bench.inference", "echo", str(echo_port)],
                env, work / "echo.log"))
            port = _free_port()
            ours_env = {**env, "FLYWHEEL_INFERENCE_GRPC_PORT": str(port),
                        "FLYWHEEL_INFERENCE_METRICS_PORT": "0",
                        "FLYWHEEL_INFERENCE_FEATURE_STORE_TARGET": features_target or "127.0.0.1:1"}
            ours = servers.enter_context(_process(
                [sys.executable, "-m", "flywheel.inference"], ours_env, work / "inference.log"))
            _wait_port(echo_port)
            _wait_ready(f"127.0.0.1:{port}", 90, ours, work / "inference.log")
            targets = {"echo": f"127.0.0.1:{echo_port}", "ours": f"127.0.0.1:{port}"}
            if not args.skip_tracing:
                traced_port = _free_port()
                traced = servers.enter_context(_process(
                    [sys.executable, "-m", "flywheel.inference"],
                    {**ours_env, "FLYWHEEL_INFERENCE_GRPC_PORT": str(traced_port),
                     "FLYWHEEL_TRACE_MEMORY_SPANS": "100000"}, work / "inference-traced.log"))
                _wait_ready(f"127.0.0.1:{traced_port}", 90, traced, work / "inference-traced.log")
                targets["traced"] = f"127.0.0.1:{traced_port}"
            cases = [("1", INFER_METHOD, single), ("256", INFER_METHOD, many)]
            if features_target:
                cases.append(("predict", PREDICT_METHOD, _predict_request()))
            for case, method, payload in cases:
                figures.update(_alternating(targets, case, method, payload, args, work))

        peer_version = None
        if args.skip_peer:
            notes.append("MLServer skipped (--skip-peer)")
        elif not Path(args.mlserver).exists():
            notes.append(f"MLServer skipped: {args.mlserver} not found (install mlserver into a "
                         "separate venv, e.g. python -m venv .venv-bench && .venv-bench/bin/pip "
                         "install mlserver onnxruntime)")
        else:
            peer_version = _mlserver_version(args.mlserver)
            for label, batching in (("mlserver_off", None), ("mlserver_adaptive", (32, 0.002))):
                figures[label] = _measure_mlserver(args, work, batching, single)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def throughput(key: str) -> float:
        return figures[key]["rps"]

    detail = dict(figures)
    results = [
        report.result("inference", "ModelInfer 1 row: rps vs echo", throughput("ours_1"),
                      throughput("echo_1"), "grpc.aio echo (same bytes)", 0.7, "higher",
                      ours=figures["ours_1"], baseline_figures=figures["echo_1"]),
        report.result("inference", "ModelInfer 256 rows: rps vs echo", throughput("ours_256"),
                      throughput("echo_256"), "grpc.aio echo (same bytes)", 0.7, "higher",
                      ours=figures["ours_256"], baseline_figures=figures["echo_256"]),
    ]
    if "ours_predict" in figures:
        results.append(report.result(
            "inference", "Predict by entity 1 row: rps vs echo", throughput("ours_predict"),
            throughput("echo_predict"), "grpc.aio echo (same bytes)", 0.35, "higher",
            ours=figures["ours_predict"], baseline_figures=figures["echo_predict"]))
    for case, label in (("1", "ModelInfer 1 row"), ("256", "ModelInfer 256 rows"),
                        ("predict", "Predict by entity 1 row")):
        if f"traced_{case}" in figures:
            results.append(report.result(
                "inference", f"{label}: rps with tracing on (100% sampled, in memory) vs off",
                throughput(f"traced_{case}"), throughput(f"ours_{case}"), "tracing off", 0.85,
                "higher", ours=figures[f"traced_{case}"], baseline_figures=figures[f"ours_{case}"]))
    for key, target_ratio in (("mlserver_off", 2.0), ("mlserver_adaptive", 1.5)):
        if key not in figures:
            continue
        name = f"MLServer {peer_version} ({'batching off' if key.endswith('off') else 'adaptive batching'})"
        results.append(report.result(
            "inference", f"ModelInfer 1 row: rps vs {name}", throughput("ours_1"),
            throughput(key), name, target_ratio, "higher",
            ours=figures["ours_1"], baseline_figures=figures[key]))
        results.append(report.result(
            "inference", f"ModelInfer 1 row: p99 ms vs {name}", figures["ours_1"]["p99_ms"],
            figures[key]["p99_ms"], name, 1.0, "lower"))
    return report.combined(
        "inference", results, notes=notes, concurrency=args.concurrency,
        duration_s=args.duration, rounds=args.rounds, machine=report.machine(), mlserver_version=peer_version,
        figures=detail,
    )


def _wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def _predict_request() -> bytes:
    from flywheel.v1 import prediction_pb2

    return prediction_pb2.PredictRequest(
        model=MODEL, entity_ids=prediction_pb2.EntityIds(ids=["bench-0"])
    ).SerializeToString()


def _features(args, common, env, work: Path, notes: list[str]):
    """The real feature store as a process, with bench-0 written; (None, nullcontext) when it
    cannot run."""
    if args.skip_predict:
        notes.append("Predict skipped (--skip-predict)")
        return None, contextlib.nullcontext()
    spec = work / "spec.yaml"
    names = [f"f{i:02d}" for i in range(N_FEATURES)]
    spec.write_text(json.dumps({"entities": [{"name": "customer",
                                              "features": [{"name": n} for n in names]}]}))
    port = _free_port()
    features_env = {**env, "FLYWHEEL_SPEC_PATH": str(spec), "FLYWHEEL_FEATURES_GRPC_PORT": str(port),
                    "FLYWHEEL_FEATURES_METRICS_PORT": "0",
                    "FLYWHEEL_FEATURES_SNAPSHOT_DIR": str(work / "snapshots")}
    stack = contextlib.ExitStack()
    try:
        process = stack.enter_context(_process([sys.executable, "-m", "flywheel.features"],
                                               features_env, work / "features.log"))
        from flywheel.common.grpc.client import wait_for_serving

        wait_for_serving(f"127.0.0.1:{port}", 60)
        _write_bench_entity(f"127.0.0.1:{port}", names)
    except Exception as error:  # noqa: BLE001 - Predict is measured only when the store runs
        stack.close()
        notes.append(f"Predict skipped: the feature store did not start ({error})")
        return None, contextlib.nullcontext()
    del process
    return f"127.0.0.1:{port}", stack


def _write_bench_entity(target: str, names: list[str]) -> None:
    import grpc
    from google.protobuf.timestamp_pb2 import Timestamp

    from flywheel.v1 import common_pb2, events_pb2, features_pb2, features_pb2_grpc

    now = Timestamp()
    now.GetCurrentTime()
    event = events_pb2.Event(entity_type="customer", entity_id="bench-0", event_time=now,
                             features={n: common_pb2.FeatureValue(double_value=0.1 * i)
                                       for i, n in enumerate(names)})
    with grpc.insecure_channel(target) as channel:
        reply = features_pb2_grpc.FeatureStoreServiceStub(channel).WriteFeatures(
            features_pb2.WriteFeaturesRequest(rows=[event]), timeout=10)
    if reply.written_count != 1:
        raise RuntimeError(f"could not write the bench entity: {reply}")


# -- MLServer (the peer) ----------------------------------------------------------------------

_RUNTIME = '''
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            self.settings.parameters.uri, sess_options=options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        label, probabilities = self._session.run(self._outputs, {"features": x})
        return InferenceResponse(model_name=self.name, outputs=[
            NumpyCodec.encode_output("label", label),
            NumpyCodec.encode_output("probabilities", probabilities),
        ])
'''


def _mlserver_version(executable: str) -> str:
    python = Path(executable).with_name("python")
    done = subprocess.run([str(python), "-c", "import mlserver; print(mlserver.__version__)"],
                          capture_output=True, timeout=60, check=False)
    return done.stdout.decode().strip() or "unknown"


def _measure_mlserver(args, work: Path, batching: tuple[int, float] | None, payload: bytes) -> dict:
    folder = work / ("mlserver-adaptive" if batching else "mlserver-off")
    folder.mkdir()
    (folder / "onnx_runtime.py").write_text(_RUNTIME)
    grpc_port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
    model_settings: dict[str, Any] = {
        "name": MODEL, "implementation": "onnx_runtime.OnnxModel",
        "parameters": {"uri": str(work / "model.onnx")},
    }
    if batching:
        model_settings.update(max_batch_size=batching[0], max_batch_time=batching[1])
    (folder / "model-settings.json").write_text(json.dumps(model_settings))
    # parallel_workers 0: inference inline in the server process; on two cores the worker
    # pool's inter-process hop only costs MLServer throughput.
    (folder / "settings.json").write_text(json.dumps({
        "grpc_port": grpc_port, "http_port": http_port, "metrics_port": metrics_port,
        "parallel_workers": 0, "debug": False,
    }))
    log = folder / "mlserver.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    with _process([str(Path(args.mlserver).absolute()), "start", str(folder)], env, log, cwd=folder) as peer:
        target = f"127.0.0.1:{grpc_port}"
        _wait_ready(target, 120, peer, log)
        # As many rounds as ours had, best kept: the same treatment on both sides.
        return _alternating({"peer": target}, "1", INFER_METHOD, payload, args, work)["peer_1"]


# -- the separate processes ------------------------------------------------------------------


async def _echo(port: int) -> None:
    import grpc

    # A coroutine, as our handlers are: grpc.aio runs a plain function in its default thread
    # pool, a hop per call that would make the echo (the limit) slower than it is.
    async def identity(request: bytes, context) -> bytes:
        return request

    class Echo(grpc.GenericRpcHandler):
        def service(self, handler_call_details):
            return grpc.unary_unary_rpc_method_handler(identity)

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.max_send_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((Echo(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def _load(spec: dict) -> dict:
    import grpc

    payload = Path(spec["payload"]).read_bytes()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    options = [("grpc.max_receive_message_length", 64 << 20)]
    tls = spec.get("tls")
    metadata = None
    if tls:
        # As an application holds it: mutual TLS on the channel, the token on every call.
        credentials = grpc.ssl_channel_credentials(*(
            Path(tls[k]).read_bytes() for k in ("ca", "key", "cert")))
        channel = grpc.aio.secure_channel(spec["target"], credentials, options=options)
        metadata = (("authorization", f"Bearer {Path(tls['token']).read_text().strip()}"),)
    else:
        channel = grpc.aio.insecure_channel(spec["target"], options=options)
    async with channel:
        call = channel.unary_unary(spec["method"])  # bytes in, bytes out: no client-side codec
        start = time.perf_counter()
        measure_from = start + spec["warmup"]
        stop_at = measure_from + spec["duration"]

        async def worker() -> None:
            while True:
                began = time.perf_counter()
                if began >= stop_at:
                    return
                try:
                    await call(payload, timeout=30, metadata=metadata)
                except grpc.aio.AioRpcError as error:
                    errors[error.code().name] = errors.get(error.code().name, 0) + 1
                    continue
                ended = time.perf_counter()
                if began >= measure_from:
                    latencies.append(ended - began)

        await asyncio.gather(*(worker() for _ in range(spec["concurrency"])))
    latencies.sort()
    count = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(count - 1, int(q * count))] * 1000 if count else float("nan")

    return {"rps": count / spec["duration"], "requests": count, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "errors": errors}


def _main(argv: list[str]) -> None:
    if argv[0] == "echo":
        asyncio.run(_echo(int(argv[1])))
    elif argv[0] == "load":
        print(json.dumps(asyncio.run(_load(json.loads(argv[1])))))
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])
