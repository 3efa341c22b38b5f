"""`flywheel bench train`: examples per second and peak memory of a training run, by window
size, the `local` engine against the `ray` engine in the same run, and both against the
trainer alone.

Set-up (not timed): for each size, labeled examples written as Parquet segments the way the
training service writes them (one topic partition, 100k rows a segment). Measured: one
child process per engine and size runs what a training run does up to the candidate:
catalog the segments, find and stream the window, fit (LightGBM by default) through the
engine. Its wall time gives examples per second; its peak resident memory (the kernel's
ru_maxrss of the child) is the controller's memory. On the ray engine the workers' memory
is the cluster's, not the controller's; the cluster is one this bench starts on this machine
(`ray start --head`), or `--ray-address`.

The baseline of memory, `trainer`: a child that writes the same training rows straight to a
spill file and fits the trainer on them, with no dataset around it: what the trainer itself
needs (for LightGBM, its binned copy of the rows, labels, gradients and scores).

Headline ratios: ray's examples per second against local's at each size both finished (on
one machine Ray pays its start-up and gains no node: below 1 there, the figure to watch as a
cluster grows); and the local engine's memory *above the trainer alone* at the largest size
against the smallest (what the dataset adds as the window grows; `better: lower`). The
peaks themselves are in the runs. A size the local engine refuses (its memory admission) is
reported as refused, with the message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NEEDS: tuple[str, ...] = ()
TOPIC = "flywheel.labeled.v1"
SEGMENT_ROWS = 100_000
SPEC = """
entities:
  - name: customer
    features: [{entity}]
models:
  - name: churn
    entity_type: customer
    task: binary_classification
    features: [{names}]
    training: {{window: {window}, holdout_fraction: 0.1, min_examples: 10, trainer: {trainer},
               params: {{n_estimators: 50, num_leaves: 31}}}}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="100000,1000000,5000000",
                        help="window sizes in labeled examples (default 100000,1000000,5000000)")
    parser.add_argument("--features", type=int, default=16, help="features per example")
    parser.add_argument("--engines", default="trainer,local,ray",
                        help="what to measure: trainer (the trainer alone on the same rows, "
                        "the baseline of memory), local, ray")
    parser.add_argument("--trainer", default="lightgbm", help="the spec's training.trainer")
    parser.add_argument("--ray-address", default="",
                        help="a running Ray cluster (default: one started for the bench)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds one measured run may take")


def _write_segments(folder: Path, rows: int, n_features: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flywheel.training.dataset import SCHEMA

    rng = np.random.default_rng(0)
    w = rng.normal(size=n_features)
    names = ",".join(f"f{i}" for i in range(n_features))
    part = folder / "segments" / TOPIC / "p0"
    part.mkdir(parents=True, exist_ok=True)
    now = int(time.time() * 1000)
    for start in range(0, rows, SEGMENT_ROWS):
        n = min(SEGMENT_ROWS, rows - start)
        X = rng.normal(size=(n, n_features))
        y = (X @ w + 0.3 * rng.normal(size=n) > 0).astype(np.float64)
        offsets = np.arange(start, start + n)
        table = pa.table({
            "topic": pa.array([TOPIC] * n), "partition": pa.array(np.zeros(n, np.int32)),
            "offset": pa.array(offsets), "ts_ms": pa.array(now - rows + offsets),
            "prediction_id": pa.array([f"p{i}" for i in offsets]),
            "model_name": pa.array(["churn"] * n), "model_version": pa.array(np.zeros(n, np.int64)),
            "role": pa.array(np.ones(n, np.int32)), "label": pa.array(y),
            "label_is_class": pa.array(np.ones(n, bool)),
            "predicted_class": pa.array(y.astype(np.int64)),
            "predicted_value": pa.array(np.zeros(n)),
            "feature_names": pa.array([names] * n),
            "features": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), n_features
                                                           ).cast(pa.list_(pa.float64())),
            "traceparent": pa.nulls(n, pa.string()),
        }, schema=SCHEMA)
        pq.write_table(table, part / f"{start:020d}-{start + n - 1:020d}.parquet",
                       compression="zstd")


def child(data_dir: str, spec_path: str, engine: str, ray_address: str) -> None:
    """One measured run (in its own process): segments -> catalog -> window -> fit; or, for
    `trainer`, the trainer alone on the same rows read from a spill file (no dataset)."""
    import numpy as np

    from flywheel.common.spec import load_spec
    from flywheel.training.dataset import Dataset
    from flywheel.training.engines import LocalEngine
    from flywheel.training.trainers import TrainingData, trainer_for

    spec = load_spec(Path(spec_path))
    model = spec.models[0]
    trainer = trainer_for(model)
    streams = getattr(trainer, "streams", False)
    started = time.perf_counter()
    out: dict[str, Any] = {}
    try:
        if engine == "trainer":
            X, y = _spilled_rows(Path(data_dir), model)
            fit_started = time.perf_counter()
            trainer.fit(TrainingData(X if streams else np.asarray(X), y, model.task,
                                     tuple(model.features)), None)
            out.update(examples=len(y), fit_seconds=time.perf_counter() - fit_started)
        else:
            if engine == "ray":
                from flywheel.training.ray_engine import RayEngine

                runner_engine: Any = RayEngine(ray_address, 2, str(Path(data_dir) / "ray"), 3600)
            else:
                runner_engine = LocalEngine()
            dataset = Dataset(Path(data_dir), spec.models)
            runner_engine.admit(model.training.window, len(model.features), streams)
            dataset.load()
            window = dataset.window(model.name, model.training.window,
                                    model.training.holdout_fraction,
                                    spill=not runner_engine.reads_segments)
            try:
                X = window.X_train if streams else np.asarray(window.X_train)
                data = TrainingData(X, window.y_train, model.task, tuple(model.features),
                                    {}, model.num_classes)
                plan = dataset.plan(model, window)
                fit_started = time.perf_counter()
                runner_engine.fit(trainer, data, None, plan)
            finally:
                window.close()
            out.update(examples=len(window.y_train),
                       fit_seconds=time.perf_counter() - fit_started)
    except Exception as error:  # noqa: BLE001 - reported as the run's outcome
        out["refused"] = str(error)
    out["seconds"] = time.perf_counter() - started
    print(json.dumps(out), flush=True)


def _spilled_rows(data_dir: Path, model: Any) -> tuple[Any, Any]:
    """The window's training rows written straight to a spill file, a segment at a time:
    what the trainer reads, without the dataset around it."""
    import numpy as np
    import pyarrow.parquet as pq

    from flywheel.training.spill import RowSpiller

    spiller = RowSpiller(data_dir / "trainer-spill", len(model.features))
    labels = []
    files = sorted((data_dir / "segments").rglob("*.parquet"))
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    train_rows = total - math.ceil(total * model.training.holdout_fraction)
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(columns=["features", "label"]):
            take = min(batch.num_rows, train_rows - spiller.rows)
            if take <= 0:
                break
            flat = batch.column("features").flatten().to_numpy()
            spiller.write(flat.reshape(batch.num_rows, -1)[:take])
            labels.append(batch.column("label").to_numpy()[:take])
    return spiller.finish(), np.concatenate(labels)


def _measure(data_dir: Path, spec_path: Path, engine: str, ray_address: str,
             timeout: float) -> dict[str, Any]:
    code = (f"from flywheel.bench.train import child; child({str(data_dir)!r}, "
            f"{str(spec_path)!r}, {engine!r}, {ray_address!r})")
    with tempfile.TemporaryFile("w+") as sink:
        process = subprocess.Popen([sys.executable, "-c", code], stdout=sink,
                                   stderr=subprocess.DEVNULL, text=True)
        # Reaped here, with its resource usage (ru_maxrss: the child's peak memory).
        deadline = time.monotonic() + timeout
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        while pid == 0:
            if time.monotonic() > deadline:
                process.kill()
            time.sleep(0.2)
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        process.returncode = status
        sink.seek(0)
        lines = [line for line in sink.read().splitlines() if line.startswith("{")]
    found = json.loads(lines[-1]) if lines else {"refused": f"no result (status {status})"}
    found["peak_mib"] = usage.ru_maxrss / 1024
    if found.get("examples"):
        found["examples_per_s"] = found["examples"] / found["seconds"]
    return found


@contextlib.contextmanager
def _ray_cluster(address: str):
    if address:
        yield address
        return
    from flywheel.infra.ports import free_port

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # the loopback only
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    port = free_port()
    flags = [x for flag in ("--ray-client-server-port", "--dashboard-port",
                            "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                            "--metrics-export-port", "--runtime-env-agent-port")
             for x in (flag, str(free_port()))]
    log = Path(temp) / "ray.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start",
             "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
             "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp,
             *flags], stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while b"Ray runtime started" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from flywheel.bench.report import combined, machine, result

    sizes = [int(s) for s in args.sizes.split(",")]
    engines = [e for e in args.engines.split(",") if e]
    names = [f"f{i}" for i in range(args.features)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-train-") as root, \
            (_ray_cluster(args.ray_address) if "ray" in engines
             else contextlib.nullcontext("")) as address:
        for size in sizes:
            folder = Path(root) / f"n{size}"
            _write_segments(folder, size, args.features)
            spec_path = folder / "spec.yaml"
            spec_path.write_text(SPEC.format(
                entity=", ".join(f"{{name: {n}}}" for n in names), names=", ".join(names),
                window=size, trainer=args.trainer))
            for engine in engines:
                figures = _measure(folder, spec_path, engine, address, args.timeout)
                rows.append({"engine": engine, "size": size, **figures})
    results = []
    by = {(r["engine"], r["size"]): r for r in rows}
    for size in sizes:
        local, ray = by.get(("local", size), {}), by.get(("ray", size), {})
        if local.get("examples_per_s") and ray.get("examples_per_s"):
            results.append(result("train", f"examples/s at {size} (ray vs local)",
                                  ray["examples_per_s"], local["examples_per_s"], "local engine",
                                  1.0, "higher"))
    # The curve that matters: the local engine's memory above what the trainer itself
    # takes on the same rows (measured alone), from the smallest window to the largest.
    for size in sizes:
        local, alone = by.get(("local", size), {}), by.get(("trainer", size), {})
        if local.get("examples") and alone.get("examples"):
            local["above_trainer_mib"] = local["peak_mib"] - alone["peak_mib"]
    above = [s for s in sizes if "above_trainer_mib" in by.get(("local", s), {})]
    if len(above) >= 2:
        small, large = above[0], above[-1]
        results.append(result(
            "train", f"local MiB above the trainer alone, {large} vs {small}",
            max(by[("local", large)]["above_trainer_mib"], 1.0),
            max(by[("local", small)]["above_trainer_mib"], 1.0),
            f"the same at {small}", 2.0, "lower"))
    return combined("train", results, runs=rows, machine=machine(), trainer=args.trainer,
                    features=args.features)
