"""Triggers, the offline gate, announcements and lineage against the real broker."""

from __future__ import annotations

from collections import Counter

import numpy as np
from training_kit import Concept, produce, read_all, read_messages, wait_for

from flywheel.v1 import common_pb2, events_pb2

TRIGGERS = ("{every_n_labels: 600, accuracy_below: 0.7, accuracy_drop: 0.2, window: 200, "
            "debounce_seconds: 1}")
REGISTERED = events_pb2.MODEL_VERSION_CHANGE_REGISTERED
PROMOTED = events_pb2.MODEL_VERSION_CHANGE_PROMOTED


def _changes(bootstrap, topics) -> list[tuple[int, int]]:
    return [(a.model_version.version, a.change) for a in read_all(bootstrap, topics.model_versions)]


def _finished(app, predicate):
    runs = [r for r in app.controller.runs.values() if r.state in ("succeeded", "failed")]
    return [r for r in runs if predicate(r)]


async def test_triggers_gate_announcements_lineage(make_app, kafka_bootstrap):
    app = await make_app(TRIGGERS)
    topics, clean = app.topics, Concept(seed=7)

    # A. 700 new labels, no champion yet: every_n_labels fires; the first candidate is promoted.
    produce(kafka_bootstrap, topics.labeled, clean.examples("a", 700, version=0))
    first = (await wait_for(
        lambda: _finished(app, lambda r: "every_n_labels" in r.trigger_reason),
        60, "an every_n_labels run"))[0]
    assert first.state == "succeeded", first.error
    assert first.promoted and first.candidate_version == 1
    assert app.registry.aliases("churn") == {"champion": 1}
    assert set(first.stage_seconds) >= {"dataset", "train", "export", "evaluate", "register"}
    assert _changes(kafka_bootstrap, topics) == [(1, REGISTERED), (1, PROMOTED)]

    # Lineage: the offset ranges in the version's metadata reproduce its dataset exactly.
    v1 = app.registry.get("churn", 1)
    assert v1.lineage.training_run_id == first.run_id and v1.lineage.parent_version == 0
    assert v1.metrics["accuracy"] > 0.8 and len(v1.sha256) == 64
    ranges = {r.partition: (r.start_offset, r.end_offset) for r in v1.lineage.training_data}
    reread = [topics.labeled.decode(m.value())
              for m in read_messages(kafka_bootstrap, topics.labeled.name, ranges=ranges)]
    reread = [e for e in reread if e.model_name == "churn"
              and e.role != common_pb2.MODEL_ROLE_SHADOW]
    assert Counter(e.prediction_id for e in reread) == Counter(first.prediction_ids())
    assert len(reread) == v1.lineage.training_examples + v1.lineage.holdout_examples
    lineage_ranges = [(r.topic, r.partition, r.start_offset, r.end_offset)
                      for r in v1.lineage.training_data]
    used = app.dataset.features_in("churn", lineage_ranges)
    assert np.allclose(np.sort(used, axis=0), np.sort([list(e.features) for e in reread], axis=0))

    # B. The champion's live accuracy drops: accuracy_below fires; a worse candidate (trained
    # on shuffled labels) is registered but not promoted.
    app.trainers["churn"].mode = "shuffled"
    produce(kafka_bootstrap, topics.labeled, clean.examples("b", 300, version=1, accuracy=0.5))
    second = (await wait_for(lambda: _finished(app, lambda r: r.run_id != first.run_id),
                            60, "an accuracy-triggered run"))[0]
    assert second.trigger_reason.startswith("accuracy_"), second.trigger_reason
    assert second.state == "succeeded", second.error
    assert not second.gate.passed and not second.promoted and second.candidate_version == 2
    assert app.registry.aliases("churn")["champion"] == 1
    assert app.registry.get("churn", 2).lineage.parent_version == 1
    assert _changes(kafka_bootstrap, topics)[2:] == [(2, REGISTERED)]

    # C. The concept drifts: a candidate trained on the new data beats the champion on the
    # same holdout and is promoted.
    app.trainers["churn"].mode = "good"
    drifted = Concept(seed=99)
    produce(kafka_bootstrap, topics.labeled, drifted.examples("c", 900, version=1, accuracy=0.5))
    better = (await wait_for(
        lambda: _finished(app, lambda r: r.promoted and r.candidate_version > 2),
        90, "a promoted run on drifted data"))[0]
    assert better.gate.candidate > better.gate.champion
    assert app.registry.aliases("churn")["champion"] == better.candidate_version
    changes = _changes(kafka_bootstrap, topics)
    assert (better.candidate_version, PROMOTED) in changes
