"""The Open Inference Protocol's model repository and statistics extensions through
tritonclient, from its own process (triton_user.py): the index lists the registry's versions,
unload and load change what ModelReady says, statistics count the calls made."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from inference_support import SPEC_PATH, register, start_inference

from flywheel.common.registry import ModelRegistry
from flywheel.common.settings import CommonSettings
from flywheel.inference.settings import InferenceSettings
from flywheel.inference.testing_models import logistic_regression_onnx
from flywheel.testing import Names

USER_SCRIPT = Path(__file__).with_name("triton_user.py")


@pytest.fixture
async def seen(tmp_path, kafka_bootstrap, redis_url, model_v1, model_v2) -> dict:
    registry = ModelRegistry(tmp_path / "registry")
    register(registry, model_v1)
    register(registry, model_v2, alias="shadow")
    register(registry, logistic_regression_onnx(24, seed=5), alias=None)  # v3: registered only
    common = CommonSettings(namespace=Names.fresh().namespace, kafka_bootstrap=kafka_bootstrap,
                            redis_url=redis_url, spec_path=SPEC_PATH,
                            registry_uri=str(registry.root), log_json=False)
    app = await start_inference(common, InferenceSettings(grpc_port=0, metrics_port=0))
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(USER_SCRIPT), f"127.0.0.1:{app.port}", "extensions", "0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()[-2000:]
        return json.loads(stdout.decode().strip().splitlines()[-1])
    finally:
        await app.stop()


async def test_repository_index_load_unload_and_statistics(seen):
    assert seen["extensions"] == ["model_repository", "statistics"]
    # Every version of the registry; the champion and the shadow loaded.
    assert seen["index"] == [["churn", "1", "READY"], ["churn", "2", "READY"],
                             ["churn", "3", "UNAVAILABLE"]]
    assert seen["ready_index"] == [["churn", "1", "READY"], ["churn", "2", "READY"]]

    # Three calls of 4 rows and one refused on v1, one of 2 rows on v2.
    v1 = seen["statistics"]["churn:1"]
    assert (v1["success"], v1["fail"], v1["inference_count"]) == (3, 1, 12)
    assert v1["execution_count"] == sum(v1["batches"].values()) >= 3
    assert v1["success_ns"] > 0 and v1["last_inference"] > 0
    v2 = seen["statistics_v2"]
    assert list(v2) == ["churn:2"]
    assert (v2["churn:2"]["success"], v2["churn:2"]["inference_count"]) == (1, 2)

    unloaded = seen["after_unload"]
    assert unloaded["ready"] is False and unloaded["ready_v1"] is False
    assert unloaded["index"] == [["churn", "1", "UNLOADED"], ["churn", "2", "UNLOADED"],
                                 ["churn", "3", "UNLOADED"]]
    assert unloaded["infer"] == "FAILED_PRECONDITION"
    loaded = seen["after_load"]
    assert loaded["ready"] is True and loaded["ready_v2"] is True
    assert loaded["ready_index"] == [["churn", "1", "READY"], ["churn", "2", "READY"]]

    assert seen["load_unknown"] == seen["unload_unknown"] == "NOT_FOUND"
    assert seen["statistics_unknown"] == "NOT_FOUND"
