"""``flywheel bench inference --secure``: the cost of security on the hot path.

Two inference services on the same registry, started here: one in plain text, one with
mutual TLS and bearer tokens (a CA, certificates and a tokens file made for the run, as
`flywheel up --secure` makes them). The load generator dials the secured one with its client
certificate and sends the token on every call. Rounds alternate between the two, as in the
plain benchmark, for ModelInfer with 1 row and with 256 rows; the result is secured / plain
throughput (target 0.8).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from flywheel.bench.inference import (
    INFER_METHOD,
    MODEL,
    N_FEATURES,
    _alternating,
    _free_port,
    _infer_request,
    _process,
    _wait_ready,
)


def _material(work: Path) -> tuple[dict[str, str], dict[str, str], Any]:
    """(the secured server's FLYWHEEL_GRPC_* variables, the client's files, its settings)."""
    from flywheel.common.grpc.auth import token_digest
    from flywheel.common.settings import GrpcSecuritySettings
    from flywheel.infra.certificates import LocalCA

    ca = LocalCA.create(work / "tls")
    server = ca.issue("inference")
    client = ca.issue("bench-client", server=False)
    token = secrets.token_urlsafe(32)
    token_file = work / "tls" / "bench.token"
    token_file.write_text(token)
    tokens = work / "tls" / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [
        {"name": "bench", "sha256": token_digest(token), "roles": ["predict"]}]}))
    server_env = {
        "FLYWHEEL_GRPC_TLS_CERT": str(server.cert), "FLYWHEEL_GRPC_TLS_KEY": str(server.key),
        "FLYWHEEL_GRPC_TLS_CLIENT_CA": str(ca.ca_file), "FLYWHEEL_GRPC_TOKENS_FILE": str(tokens),
    }
    files = {"ca": str(ca.ca_file), "cert": str(client.cert), "key": str(client.key),
             "token": str(token_file)}
    settings = GrpcSecuritySettings(tls_ca=ca.ca_file, tls_client_cert=client.cert,
                                    tls_client_key=client.key, token_file=token_file)
    return server_env, files, settings


def run_secure(args: argparse.Namespace) -> dict[str, Any]:
    from flywheel.bench import report
    from flywheel.common.registry import CHAMPION, ModelRegistry
    from flywheel.common.settings import CommonSettings
    from flywheel.inference.testing_models import feature_names, logistic_regression_onnx

    common = CommonSettings()
    work = Path(tempfile.mkdtemp(prefix="flywheel-bench-secure-"))
    registry = ModelRegistry(work / "registry")
    meta = registry.register(MODEL, logistic_regression_onnx(N_FEATURES), task=1,
                             entity_type="customer", feature_names=feature_names(N_FEATURES))
    registry.promote(MODEL, meta.version, CHAMPION)
    server_env, client_files, client_settings = _material(work)
    # The mesh's own gRPC security (a secured mesh's operator settings) stays out: each
    # server here gets exactly the transport it is measured with.
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_GRPC_")}
    base.update(FLYWHEEL_NAMESPACE=f"bench{secrets.token_hex(4)}",
                FLYWHEEL_REGISTRY_URI=str(work / "registry"), FLYWHEEL_LOG_LEVEL="WARNING",
                FLYWHEEL_KAFKA_BOOTSTRAP=common.kafka_bootstrap,
                FLYWHEEL_INFERENCE_METRICS_PORT="0",
                FLYWHEEL_INFERENCE_FEATURE_STORE_TARGET="127.0.0.1:1")
    figures: dict[str, dict] = {}
    try:
        with contextlib.ExitStack() as servers:
            ports = {"plain": _free_port(), "secured": _free_port()}
            for name, extra in (("plain", {}), ("secured", server_env)):
                env = {**base, **extra, "FLYWHEEL_INFERENCE_GRPC_PORT": str(ports[name])}
                process = servers.enter_context(_process(
                    [sys.executable, "-m", "flywheel.inference"], env, work / f"{name}.log"))
                _wait_ready(f"127.0.0.1:{ports[name]}", 90, process, work / f"{name}.log",
                            security=client_settings if name == "secured" else None)
            targets = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
            for case, payload in (("1", _infer_request(1)), ("256", _infer_request(256))):
                figures.update(_alternating(targets, case, INFER_METHOD, payload, args, work,
                                            tls={"secured": client_files}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = [
        report.result(
            "inference", f"ModelInfer {rows} row{'s' if rows != '1' else ''}: rps with mutual "
            "TLS + token vs plain text", figures[f"secured_{rows}"]["rps"],
            figures[f"plain_{rows}"]["rps"], "the same service in plain text, same run", 0.8,
            "higher", ours=figures[f"secured_{rows}"], baseline_figures=figures[f"plain_{rows}"])
        for rows in ("1", "256")
    ]
    return report.combined(
        "inference", results, concurrency=args.concurrency, duration_s=args.duration,
        rounds=args.rounds, machine=report.machine(), figures=figures, secure=True,
    )
