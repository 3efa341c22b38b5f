"""Ingest's reply lists the first rejections up to its limit and counts every one."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from flywheel.bench.workload import random_event
from flywheel.common.spec import load_spec
from flywheel.common.validation import EventValidator
from flywheel.ingest.core import Ingestor, Outcome
from flywheel.v1 import ingest_pb2

SPEC = load_spec(Path(__file__).resolve().parents[2] / "flywheel.yaml")


def test_rejections_past_the_limit_are_counted_not_listed() -> None:
    customer = SPEC.entity("customer")
    now_ms = int(time.time() * 1000) - 1000
    events = [random_event(customer, f"c{i}", now_ms, random.Random(i)) for i in range(40)]
    for event in events[::2]:
        event.features["f03"].double_value = math.nan
    message = ingest_pb2.IngestRequest(events=events).SerializeToString()
    ingestor = Ingestor(EventValidator(SPEC), None, None,  # type: ignore[arg-type]
                        max_reported_rejections=5)
    outcome = Outcome()
    records, count = ingestor._screen(message, 0, outcome, keep_ids=False)
    assert (count, len(records), outcome.rejected) == (40, 20, 20)
    assert [r.index for r in outcome.rejections] == [0, 2, 4, 6, 8]
    assert {r.problem.field for r in outcome.rejections} == {"features.f03"}
