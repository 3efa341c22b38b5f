"""Helpers for the training tests: a test spec, synthetic labeled examples, reading topics.

Imported by name (the test folders are not packages; pytest puts this folder on sys.path).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from flywheel.common.kafka.headers import standard_headers
from flywheel.common.kafka.topics import Topic
from flywheel.training.trainers import make_trainer
from flywheel.v1 import common_pb2, events_pb2

FEATURES = tuple(f"f{i:02d}" for i in range(24))

SPEC = """
entities:
  - name: customer
    features: [{features}]
models:
  - name: churn
    entity_type: customer
    task: {task}
    features: [{names}]
    triggers: {triggers}
    gate: {gate}
    training: {training}
    live: {{min_labels: 200, rollback_margin: 0.05}}
"""
GATE = "{metric: accuracy, min_improvement: 0.0, min_holdout: 100}"
TRAINING = "{window: 1000, holdout_fraction: 0.25, min_examples: 300}"


def write_spec(path: Path, triggers: str, *, task: str = "binary_classification",
               gate: str = GATE, training: str = TRAINING,
               extra_features: tuple[str, ...] = (), model_features: tuple[str, ...] = FEATURES
               ) -> Path:
    """The test spec: 24 double features (plus `extra_features`, given as YAML mappings)."""
    entity = [f"{{name: {n}}}" for n in FEATURES] + list(extra_features)
    path.write_text(SPEC.format(features=", ".join(entity), names=", ".join(model_features),
                                triggers=triggers, task=task, gate=gate, training=training))
    return path


class Concept:
    """Labels from a fixed random hyperplane; `accuracy` sets how often `predicted` is right."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.w = self.rng.normal(size=len(FEATURES))

    def rows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        X = self.rng.normal(size=(n, len(FEATURES)))
        y = (X @ self.w + 0.2 * self.rng.normal(size=n) > 0).astype(np.int64)
        return X, y

    def examples(self, prefix: str, n: int, *, version: int, accuracy: float = 1.0,
                 role: int = common_pb2.MODEL_ROLE_CHAMPION) -> list:
        X, y = self.rows(n)
        right = self.rng.random(n) < accuracy
        predicted = np.where(right, y, 1 - y)
        return labeled(prefix, X, y, predicted, version=version, role=role)


def labeled(prefix: str, X: np.ndarray, y: np.ndarray, predicted: np.ndarray, *, version: int,
            role: int = common_pb2.MODEL_ROLE_CHAMPION, regression: bool = False,
            names: tuple[str, ...] = FEATURES) -> list:
    """Labeled examples as the feedback join writes them: features, label, prediction."""
    out = []
    for i in range(len(X)):
        if regression:
            label = common_pb2.Label(value=float(y[i]))
            output = common_pb2.ModelOutput(predicted_value=float(predicted[i]))
        else:
            label = common_pb2.Label(class_label=int(y[i]))
            output = common_pb2.ModelOutput(predicted_class=int(predicted[i]))
        out.append(events_pb2.LabeledExample(
            prediction_id=f"{prefix}{i}", model_name="churn", model_version=version,
            role=role, entity_type="customer", feature_names=names,
            features=[float(v) for v in X[i]], label=label, prediction=output,
            task=(common_pb2.MODEL_TASK_REGRESSION if regression
                  else common_pb2.MODEL_TASK_BINARY_CLASSIFICATION),
        ))
    return out


class SwitchTrainer:
    """The logistic trainer, or (mode "shuffled") one that learns from shuffled labels: a
    candidate reliably worse than a champion trained on the real ones."""

    name = "logistic"
    mode = "good"

    def __init__(self) -> None:
        self._inner = make_trainer("logistic")
        self.native_format = self._inner.native_format

    def fit(self, data, parent=None):
        if self.mode == "shuffled":
            data = dataclasses.replace(data, y=np.random.default_rng(1).permutation(data.y))
        return self._inner.fit(data, parent)


def produce(bootstrap: str, topic: Topic, examples: list) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10})
    for example in examples:
        producer.produce(topic.name, key=example.prediction_id.encode(),
                         value=topic.encode(example), headers=standard_headers(topic.type_name))
        producer.poll(0)
    assert producer.flush(30) == 0


def read_all(bootstrap: str, topic: Topic, settle_s: float = 1.0) -> list:
    """Every committed record of `topic`, reading until `settle_s` of quiet."""
    return [topic.decode(m.value()) for m in read_messages(bootstrap, topic.name, settle_s)]


def read_messages(bootstrap: str, topic: str, settle_s: float = 1.0,
                  ranges: dict[int, tuple[int, int]] | None = None) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r{time.monotonic_ns()}",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    wanted = ranges or dict.fromkeys(partitions, (0, -1))
    consumer.assign([TopicPartition(topic, p, a) for p, (a, _) in wanted.items()])
    out, quiet_since = [], time.monotonic()
    try:
        while time.monotonic() - quiet_since < settle_s:
            batch = [m for m in consumer.consume(1000, 0.2) if m.error() is None]
            if batch:
                quiet_since = time.monotonic()
            for message in batch:
                first, last = wanted[message.partition()]
                if message.offset() >= first and (last < 0 or message.offset() <= last):
                    out.append(message)
    finally:
        consumer.close()
    return out


async def wait_for(predicate: Callable[[], object], timeout_s: float, what: str):
    """Polls without blocking the event loop the service under test runs on."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class FileHeldTrainer:
    """The logistic trainer, held inside fit while `<folder>/hold` exists, with
    `<folder>/inside` written when it enters: a run caught mid-training in another process.
    Named in a spec as `training_kit:held_trainer` (FLYWHEEL_TEST_HOLD_DIR names the folder)."""

    name = "training_kit:held_trainer"

    def __init__(self, folder: str) -> None:
        self._folder = Path(folder)
        self._inner = make_trainer("logistic")
        self.native_format = self._inner.native_format

    def fit(self, data, parent=None):
        (self._folder / "inside").touch()
        deadline = time.monotonic() + 120
        while (self._folder / "hold").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return self._inner.fit(data, parent)


def held_trainer(folder: str = "") -> FileHeldTrainer:
    return FileHeldTrainer(folder)
