"""`flywheel bench loop`: seconds from a retrain trigger to the new version serving.

For each size (10k and 100k labeled examples by default) the labeled examples are first
written as Parquet segments (set-up, not timed) and a deliberately weak champion is
registered, so the candidate wins the gate. Then, timed as a whole: build the dataset from
the segments, train, export ONNX, evaluate candidate and champion on the same holdout,
register, promote, and load + warm the registered artifact the way inference does. Each
stage is then timed again on its own; figures are medians of --repeat runs. Headline ratios:
the whole against the sum of its stages alone (target <= 1.5), and the 100k whole against a
30 s budget (target <= 1.0).

Serving uses the inference package's `Loader` (sha256 check, ONNX checker, session, warm-up)
when it is importable, else a bare ONNX Runtime session warmed on two rows; the result says
which. Kafka is not involved: announcements go to a no-op publisher.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

SPEC_PATH = Path("flywheel.yaml")
#: Needs no broker and no Redis (`flywheel bench` resolves none).
NEEDS: tuple[str, ...] = ()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="10000,100000",
                        help="labeled example counts, comma separated (default 10000,100000)")
    parser.add_argument("--spec", type=Path, default=SPEC_PATH, help="the spec file")
    parser.add_argument("--repeat", type=int, default=3,
                        help="repetitions per size; medians are reported (default 3)")


def _serving_loader(registry):
    """(how, load(meta) -> session): the inference loader when present."""
    try:
        from flywheel.inference.loader import Loader, session_factory
    except ImportError:
        Loader = None
    if Loader is not None:
        loader = Loader(registry, session_factory(("CPUExecutionProvider",), 1, 1),
                        max_artifact_bytes=512 * 1024 * 1024)
        return "flywheel.inference.loader.Loader", loader.load
    import numpy as np

    from flywheel.training.scoring import OnnxScorer

    def load(meta):
        scorer = OnnxScorer(registry.artifact_path(meta).read_bytes())
        scorer.score(np.zeros((2, len(meta.feature_names))))
        return scorer

    return "onnxruntime.InferenceSession", load


def _examples(n: int, features: list[str], seed: int = 0):
    import numpy as np

    from flywheel.training.dataset import LabeledRow
    from flywheel.v1 import common_pb2, events_pb2

    rng = np.random.default_rng(seed)
    w = rng.normal(size=len(features))
    X = rng.normal(size=(n, len(features)))
    y = (X @ w + 0.5 * rng.normal(size=n) > 0).astype(int)
    rows = []
    for i in range(n):
        example = events_pb2.LabeledExample(
            prediction_id=f"b{i}", model_name="churn", model_version=1,
            role=common_pb2.MODEL_ROLE_CHAMPION, feature_names=features,
            features=X[i].tolist(), label=common_pb2.Label(class_label=int(y[i])),
            prediction=common_pb2.ModelOutput(predicted_class=int(y[i])),
        )
        rows.append(LabeledRow("bench.labeled", i % 3, i // 3, 1_000_000 + i, example))
    return rows


def _one_size(n: int, spec_path: Path, work: Path, repeat: int) -> dict[str, Any]:
    import numpy as np

    from flywheel.common.registry import CHAMPION, ModelRegistry
    from flywheel.common.spec import load_spec
    from flywheel.training.dataset import Dataset
    from flywheel.training.gate import metric
    from flywheel.training.promotions import Promotions
    from flywheel.training.runner import TASKS, Runner, TrainingRun
    from flywheel.training.scoring import OnnxScorer
    from flywheel.training.trainers import TrainingData, trainer_for

    base = load_spec(spec_path)
    model = base.models[0]
    model = model.model_copy(update={"training": model.training.model_copy(
        update={"window": n, "min_examples": min(n, model.training.min_examples)})})
    spec = base.model_copy(update={"models": (model,)})
    features = list(model.features)
    data_dir, registry = work / f"data-{n}", ModelRegistry(work / f"registry-{n}")
    Dataset(data_dir, spec.models).append(_examples(n, features))

    trainer = trainer_for(model)
    # A weak champion (trained on 200 rows with shuffled labels) for the candidate to beat.
    rng = np.random.default_rng(1)
    X0 = rng.normal(size=(200, len(features)))
    weak = trainer.fit(TrainingData(X0, rng.integers(0, 2, 200), model.task,
                                    tuple(features))).to_onnx()
    champion = registry.register("churn", weak, task=TASKS[model.task],
                                 entity_type=model.entity_type, feature_names=features,
                                 metrics={"accuracy": 0.5})
    registry.set_alias("churn", CHAMPION, champion.version)
    serving_how, serve = _serving_loader(registry)
    serve(champion)  # warms imports and caches, as a running inference service has

    def whole_once() -> tuple[float, Any]:
        registry.set_alias("churn", CHAMPION, champion.version)  # the weak one, every time
        gc.collect()  # no collector debt from the set-up lands inside the timing
        start = time.perf_counter()
        dataset = Dataset(data_dir, spec.models)
        dataset.load()
        runner = Runner(spec=spec, dataset=dataset, registry=registry,
                        promotions=Promotions(registry, lambda record: None),
                        trainers={model.name: trainer})
        run = runner.run(TrainingRun("churn", "bench"))
        if run.state != "succeeded" or not run.promoted:
            raise RuntimeError(f"bench run did not promote: {run.error or run.gate}")
        serve(registry.resolve("churn", CHAMPION))
        return time.perf_counter() - start, run

    def stages_once(candidate_version: int) -> dict[str, float]:
        alone: dict[str, float] = {}
        gc.collect()
        t = time.perf_counter()
        fresh = Dataset(data_dir, spec.models)
        fresh.load()
        window = fresh.window("churn", n, model.training.holdout_fraction)
        alone["dataset"] = time.perf_counter() - t
        t = time.perf_counter()
        fitted = trainer.fit(TrainingData(window.X_train, window.y_train, model.task,
                                          tuple(features)))
        alone["train"] = time.perf_counter() - t
        t = time.perf_counter()
        artifact = fitted.to_onnx()
        alone["export"] = time.perf_counter() - t
        t = time.perf_counter()
        for scorer in (OnnxScorer(artifact), OnnxScorer(weak)):
            scores = scorer.score(window.X_holdout)
            metric("accuracy", window.y_holdout, scores.predicted, scores.probabilities)
        alone["evaluate"] = time.perf_counter() - t
        t = time.perf_counter()
        ModelRegistry(work / f"scratch-{n}").register(
            "churn", artifact, task=TASKS[model.task], entity_type=model.entity_type,
            feature_names=features)
        alone["register"] = time.perf_counter() - t
        t = time.perf_counter()
        serve(registry.get("churn", candidate_version))
        alone["load_and_swap"] = time.perf_counter() - t
        return alone

    wholes, runs, stage_sets = [], [], []
    for _ in range(max(1, repeat)):
        seconds, run = whole_once()
        wholes.append(seconds)
        runs.append(run)
        stage_sets.append(stages_once(run.candidate_version))
    whole = float(np.median(wholes))
    alone = {k: float(np.median([s[k] for s in stage_sets])) for k in stage_sets[0]}
    run = runs[-1]
    in_run = {k: float(np.median([r.stage_seconds[k] for r in runs])) for k in run.stage_seconds}
    return {"examples": n, "whole_s": whole, "whole_runs_s": wholes, "stages_alone_s": alone,
            "sum_of_stages_s": sum(alone.values()), "stages_in_run_s": in_run,
            "candidate_accuracy": run.gate.candidate, "champion_accuracy": run.gate.champion,
            "serving": serving_how}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from flywheel.bench import report
    from flywheel.bench.report import result

    sizes = [int(s) for s in str(getattr(args, "sizes", "10000,100000")).split(",") if s]
    spec_path = Path(getattr(args, "spec", SPEC_PATH))
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-loop-") as work:
        repeat = int(getattr(args, "repeat", 3))
        measured = [_one_size(n, spec_path, Path(work), repeat) for n in sizes]
    results = []
    for m in measured:
        results.append(result(
            "loop", f"seconds trigger->serving, {m['examples']} examples", m["whole_s"],
            m["sum_of_stages_s"], "sum of the stages timed alone", 1.5, "lower",
            examples=m["examples"], whole_runs_s=m["whole_runs_s"],
            stages_alone_s=m["stages_alone_s"],
            stages_in_run_s=m["stages_in_run_s"], serving=m["serving"],
            candidate_accuracy=m["candidate_accuracy"], champion_accuracy=m["champion_accuracy"],
        ))
    largest = max(measured, key=lambda m: m["examples"])
    results.append(result(
        "loop", f"seconds trigger->serving, {largest['examples']} examples (budget)",
        largest["whole_s"], 30.0, "budget of 30 s", 1.0, "lower", examples=largest["examples"],
    ))
    return report.combined("loop", results, machine=report.machine())


if __name__ == "__main__":
    from flywheel.bench.report import standalone

    standalone("loop", add_arguments, run)
