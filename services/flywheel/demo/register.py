"""The seed model enters the mesh the way a user's own model does: ``flywheel models
register`` with the ONNX file, against the mesh's registry, broker and namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flywheel.demo.clients import MeshEndpoints
from flywheel.demo.scenario import ENTITY_TYPE, FEATURE_NAMES, MODEL
from flywheel.demo.seed import train_seed_model


class RegistrationError(Exception):
    pass


def register_seed(
    endpoints: MeshEndpoints, features: np.ndarray, labels: np.ndarray, seed: int,
    out_dir: Path,
) -> tuple[int, float]:
    """Trains the seed model, registers it with the CLI; returns (version, holdout accuracy).
    Blocking (a subprocess); run it in a thread."""
    artifact, accuracy = train_seed_model(features, labels, seed)
    path = out_dir / "seed-model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(artifact)
    version = register_onnx(endpoints, path, MODEL, ENTITY_TYPE, FEATURE_NAMES,
                            "binary_classification")
    return version, accuracy


def register_onnx(
    endpoints: MeshEndpoints, path: Path, model: str, entity_type: str,
    feature_names: Sequence[str], task: str,
) -> int:
    """``flywheel models register`` (announced, not promoted); returns the new version.
    Blocking (a subprocess); run it in a thread."""
    argv = [
        sys.executable, "-m", "flywheel.cli", "models", "register", str(path),
        "--name", model, "--entity-type", entity_type, "--features", ",".join(feature_names),
        "--task", task, "--json",
    ]
    env = dict(os.environ)
    env.update(
        FLYWHEEL_REGISTRY_URI=endpoints.registry_uri,
        FLYWHEEL_KAFKA_BOOTSTRAP=endpoints.kafka_bootstrap,
        FLYWHEEL_NAMESPACE=endpoints.namespace,
    )
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise RegistrationError("`flywheel models register` did not finish within 120s") from None
    if done.returncode != 0:
        raise RegistrationError(
            f"`flywheel models register` failed ({done.returncode}): {done.stderr.strip()[-800:]}"
        )
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    return int(reply["version"])
