"""`flywheel bench providers`: batch sizes, the crossover rule, and the IOBinding runs (checked
on the CPU provider here; the same calls bind to CUDA on a GPU machine)."""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
import pytest

from flywheel.bench import providers
from flywheel.inference.runtime import Session
from flywheel.inference.testing_models import (
    INPUT_NAME,
    logistic_regression_onnx,
    mlp_onnx,
)


def test_batch_sizes_are_powers_of_two_up_to_the_largest():
    assert providers.batch_sizes(8192) == [2 ** k for k in range(14)]
    assert providers.batch_sizes(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    assert providers.batch_sizes(1) == [1]
    with pytest.raises(ValueError):
        providers.batch_sizes(0)


@pytest.mark.parametrize(("cpu", "cuda", "expected"), [
    ([10, 10, 10, 10], [1, 5, 12, 20], 4),       # CUDA ahead from the third size on
    ([10, 10, 10, 10], [1, 12, 5, 20], 8),       # ahead at 2, behind at 4: only 8 counts
    ([10, 10, 10, 10], [1, 12, 20, 5], None),    # behind at the largest: no crossover
    ([10, 10, 10, 10], [10, 10, 10, 10], 1),     # a tie counts for CUDA
])
def test_crossover_is_where_cuda_stays_ahead_to_the_largest_size(cpu, cuda, expected):
    assert providers.crossover([1, 2, 4, 8], cpu, cuda) == expected


@pytest.mark.parametrize("model", [logistic_regression_onnx(32), mlp_onnx(32, hidden=16, layers=2)])
def test_bound_and_resident_runs_answer_as_a_plain_run(model):
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).normal(size=(64, 32)).astype(np.float32)
    expected = providers.host_runner(session, INPUT_NAME, x)()
    bound = providers.bound_runner(session, INPUT_NAME, x, "cpu")
    for _ in range(2):  # bound afresh per run: a second run answers the same
        for got, want in zip(bound(), expected, strict=True):
            np.testing.assert_array_equal(got, want)
    resident = providers.resident_runner(session, INPUT_NAME, x, "cpu")
    assert resident() is None


def test_the_mlp_is_served_like_the_logistic_regression():
    session = Session(mlp_onnx(8, hidden=16, layers=2), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.signature.outputs] == ["label", "probabilities"]
    x = np.random.default_rng(5).normal(size=(50, 8)).astype(np.float32)
    labels, probabilities = session.run({INPUT_NAME: x})
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(labels, probabilities.argmax(axis=1))
    assert len(set(labels.tolist())) == 2  # both classes occur: the weights are not degenerate


def test_rows_per_second_counts_rows_over_the_runs():
    calls = []
    rate = providers.rows_per_second(lambda: calls.append(1), rows=10, min_seconds=0.0,
                                     min_runs=5, warmup_runs=2)
    assert len(calls) == 7 and rate > 0


def test_options_not_given_take_the_defaults_the_command_line_declares():
    from flywheel.bench import inference, report

    args = report.with_defaults(argparse.Namespace(max_batch=4), providers.add_arguments)
    assert (args.max_batch, args.min_seconds, args.cpu_threads, args.hidden, args.layers,
            args.device_id) == (4, 0.3, 0, 0, 3, 0)
    args = report.with_defaults(argparse.Namespace(rounds=1), inference.add_arguments)
    assert (args.rounds, args.duration, args.prime, args.skip_peer) == (1, 5.0, 5.0, False)


HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
ARGS = {"max_batch": 4, "min_seconds": 0.01, "cpu_threads": 1, "hidden": 0, "layers": 3,
        "device_id": 0}


@pytest.mark.skipif(HAS_CUDA, reason="this ONNX Runtime has the CUDA provider")
def test_without_cuda_the_cpu_curve_is_measured_and_the_reason_given():
    outcome = providers.run(argparse.Namespace(**ARGS))
    assert [p["batch"] for p in outcome["points"]] == [1, 2, 4]
    assert all(p["cpu_rows_s"] > 0 and "cuda_rows_s" not in p for p in outcome["points"])
    assert outcome["cuda"].startswith("skipped: ") and "no CUDA provider" in outcome["cuda"]
    assert outcome["crossover_batch"] is None
    assert [r["metric"] for r in outcome["results"]] == [
        "batch 1: CPU rows/s", "batch 2: CPU rows/s", "batch 4: CPU rows/s"]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA provider (the gpu extra on a GPU machine)")
def test_on_cuda_bound_runs_answer_as_the_cpu_and_the_curve_has_both_sides():
    model = mlp_onnx(32, hidden=64, layers=2)
    x = np.random.default_rng(4).normal(size=(256, 32)).astype(np.float32)
    on_cpu = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    on_cuda = ort.InferenceSession(model, providers=["CUDAExecutionProvider",
                                                     "CPUExecutionProvider"])
    assert on_cuda.get_providers()[0] == "CUDAExecutionProvider"
    want = providers.host_runner(on_cpu, INPUT_NAME, x)()
    got = providers.bound_runner(on_cuda, INPUT_NAME, x, "cuda")()
    np.testing.assert_allclose(got[1], want[1], rtol=1e-3, atol=1e-5)
    assert providers.resident_runner(on_cuda, INPUT_NAME, x, "cuda")() is None
    outcome = providers.run(argparse.Namespace(**ARGS))
    assert all(p["cuda_rows_s"] > 0 and p["cuda_resident_rows_s"] > 0 for p in outcome["points"])
    assert "CUDAExecutionProvider" in outcome["cuda"]
