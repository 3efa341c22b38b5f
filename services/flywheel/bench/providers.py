"""``flywheel bench providers``: ONNX Runtime's CUDA provider, through an IOBinding, against
its CPU provider, batch sizes 1 to 8192.

At each batch size (powers of two) the same model answers the same rows on the CPU, then on
CUDA, side by side; each figure is rows per second over at least `--min-seconds` of runs. The
crossover is the smallest batch size from which CUDA answers more rows per second than the
CPU at that size and at every larger one measured: below it, batches belong on the CPU.

A CUDA run goes as a request would pay for it: the rows are bound from host memory (ONNX
Runtime copies them to the device), the outputs are bound to the device and copied back to
the host after the run. `cuda_resident_rows_s` beside it runs on rows already on the device
and leaves the outputs there: the difference is what the copies cost.

The model: the 32-feature logistic regression of `bench inference` by default, or with
`--hidden N` a multilayer perceptron (`--layers` hidden layers of N units), heavier per row.
The CPU session uses `--cpu-threads` intra-op threads (0: ONNX Runtime's default, every
physical core), the strongest CPU baseline for large batches.

Without a CUDA provider (the `cpu` extra, or no GPU) only the CPU curve is measured and the
comparison is reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

N_FEATURES = 32
#: Needs no broker and no Redis (`flywheel bench` resolves none).
NEEDS: tuple[str, ...] = ()
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-batch", type=int, default=8192, help="largest batch size")
    parser.add_argument("--min-seconds", type=float, default=0.3,
                        help="seconds of runs per batch size and provider")
    parser.add_argument("--cpu-threads", type=int, default=0,
                        help="intra-op threads of the CPU session (0: ONNX Runtime's default)")
    parser.add_argument("--hidden", type=int, default=0,
                        help="units per hidden layer of an MLP (0: the logistic regression)")
    parser.add_argument("--layers", type=int, default=3, help="hidden layers of the MLP")
    parser.add_argument("--device-id", type=int, default=0, help="the CUDA device")


def batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to `max_batch` (itself included when it is no power of two)."""
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch]


def crossover(sizes: Sequence[int], cpu: Sequence[float], cuda: Sequence[float]) -> int | None:
    """The smallest size from which `cuda` >= `cpu` at it and every larger size; None when
    CUDA is behind at the largest."""
    found = None
    for size, on_cpu, on_cuda in reversed(list(zip(sizes, cpu, cuda, strict=True))):
        if on_cuda < on_cpu:
            break
        found = size
    return found


def rows_per_second(run: Callable[[], Any], rows: int, min_seconds: float,
                    min_runs: int = 5, warmup_runs: int = 3) -> float:
    """Rows per second of `run` (each answering `rows` rows), after a few warm-up runs, over
    at least `min_seconds` and `min_runs` runs."""
    for _ in range(warmup_runs):
        run()
    runs = 0
    began = time.perf_counter()
    while True:
        run()
        runs += 1
        elapsed = time.perf_counter() - began
        if runs >= min_runs and elapsed >= min_seconds:
            return rows * runs / elapsed


def host_runner(session, input_name: str, x) -> Callable[[], Any]:
    """A plain run: numpy in, numpy out."""
    return lambda: session.run(None, {input_name: x})


def bound_runner(session, input_name: str, x, device: str, device_id: int = 0) -> Callable[[], Any]:
    """A run as a request pays for it: rows bound from host memory, outputs bound to `device`
    and copied to the host after the run. Bound afresh per run, as each request would be."""
    binding = session.io_binding()
    output_names = [output.name for output in session.get_outputs()]

    def run() -> list:
        binding.bind_cpu_input(input_name, x)
        for name in output_names:
            binding.bind_output(name, device, device_id)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    return run


def resident_runner(session, input_name: str, x, device: str, device_id: int = 0) -> Callable[[], Any]:
    """Rows already on `device`, outputs left there: the run alone, no copies."""
    import onnxruntime as ort

    binding = session.io_binding()
    on_device = ort.OrtValue.ortvalue_from_numpy(x, device, device_id)
    binding.bind_ortvalue_input(input_name, on_device)
    for output in session.get_outputs():
        binding.bind_output(output.name, device, device_id)

    def run() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()  # the device has finished, not merely been handed work

    return run


def _session(model: bytes, providers: list, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, sess_options=options, providers=providers)


def _cuda_unavailable() -> str | None:
    """Why CUDA cannot be measured here, or None."""
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return (f"this ONNX Runtime ({ort.__version__}, providers "
                f"{', '.join(ort.get_available_providers())}) has no CUDA provider: install the "
                "gpu extra on a machine with an NVIDIA GPU")
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from flywheel.bench import report
    from flywheel.inference.testing_models import (
        INPUT_NAME,
        logistic_regression_onnx,
        mlp_onnx,
    )

    report.with_defaults(args, add_arguments)
    if args.hidden > 0:
        model = mlp_onnx(N_FEATURES, args.hidden, args.layers)
        model_name = f"MLP {N_FEATURES}-{'-'.join([str(args.hidden)] * args.layers)}-2"
    else:
        model = logistic_regression_onnx(N_FEATURES)
        model_name = f"logistic regression, {N_FEATURES} features"
    sizes = batch_sizes(args.max_batch)
    rows = np.random.default_rng(0).normal(size=(sizes[-1], N_FEATURES)).astype(np.float32)
    cpu_session = _session(model, [CPU], args.cpu_threads)
    skipped = _cuda_unavailable()
    cuda_session = None
    cuda_providers: list[str] = []
    if skipped is None:
        cuda_session = _session(model, [(CUDA, {"device_id": args.device_id}), CPU], 0)
        cuda_providers = cuda_session.get_providers()
        if CUDA not in cuda_providers:
            skipped = f"the CUDA provider did not load (session providers {cuda_providers})"
            cuda_session = None

    points = []
    for size in sizes:
        x = np.ascontiguousarray(rows[:size])
        point: dict[str, Any] = {"batch": size, "cpu_rows_s": rows_per_second(
            host_runner(cpu_session, INPUT_NAME, x), size, args.min_seconds)}
        if cuda_session is not None:
            point["cuda_rows_s"] = rows_per_second(
                bound_runner(cuda_session, INPUT_NAME, x, "cuda", args.device_id), size,
                args.min_seconds)
            point["cuda_resident_rows_s"] = rows_per_second(
                resident_runner(cuda_session, INPUT_NAME, x, "cuda", args.device_id), size,
                args.min_seconds)
        points.append(point)

    if cuda_session is None:
        results = [{"metric": f"batch {p['batch']}: CPU rows/s", "value": p["cpu_rows_s"],
                    "baseline": "", "baseline_name": "", "ratio": "", "target": "",
                    "ok": True} for p in points]
        detail = {"cuda": f"skipped: {skipped}", "crossover_batch": None}
    else:
        # No target: which side wins at a size is the finding, not a pass or a fail.
        results = [{"metric": f"batch {p['batch']}: CUDA+IOBinding rows/s vs CPU",
                    "value": p["cuda_rows_s"], "baseline": p["cpu_rows_s"],
                    "baseline_name": "CPU provider", "ratio": p["cuda_rows_s"] / p["cpu_rows_s"],
                    "target": "", "ok": True} for p in points]
        detail = {"cuda": cuda_providers, "crossover_batch": crossover(
            sizes, [p["cpu_rows_s"] for p in points], [p["cuda_rows_s"] for p in points])}
    return {"bench": "providers", "ok": True, "results": results, **detail,
            "model": model_name, "cpu_threads": args.cpu_threads or "default",
            "points": points, "machine": report.machine()}


if __name__ == "__main__":
    from flywheel.bench.report import standalone

    standalone("providers", add_arguments, run)
