"""The dataset's catalog and streamed windows against a plain in-memory reading of the same
rows: every window, holdout, lineage and live-check answer must be the one the whole data
gives, whether it comes from the tail or is read back from the segments."""

import math

import numpy as np
import pytest

from flywheel.common.spec import ModelSpec
from flywheel.training.dataset import CHAMPION, SHADOW, Dataset, LabeledRow
from flywheel.v1 import events_pb2

TOPIC = "flywheel.labeled.v1"
FEATURES = ["a", "b", "c"]


def spec(name="churn", window=100):
    return ModelSpec.model_validate({
        "name": name, "entity_type": "customer", "task": "binary_classification",
        "features": FEATURES, "training": {"window": window, "min_examples": 1}})


def make_rows(rng, count, partitions=3):
    """Rows as the consumer sees them: partitions interleaved, timestamps rising with
    jitter and ties, shadow rows, wrong-kind labels, another model, reordered and missing
    features."""
    offsets = dict.fromkeys(range(partitions), 0)
    rows, ts = [], 1_000
    for i in range(count):
        partition = int(rng.integers(partitions))
        offset = offsets[partition]
        offsets[partition] += 1
        ts += int(rng.integers(0, 3))  # ties on purpose
        example = events_pb2.LabeledExample(
            prediction_id=f"id{i}", model_name="churn" if rng.random() > 0.1 else "other",
            model_version=int(rng.integers(1, 4)),
            role=SHADOW if rng.random() < 0.15 else CHAMPION)
        names = list(FEATURES) if rng.random() > 0.2 else ["c", "a", "b", "extra"]
        if rng.random() < 0.03:
            names = ["a", "b"]  # a row the model cannot read
        values = {n: float(rng.normal()) for n in names}
        example.feature_names[:] = names
        example.features[:] = [values[n] for n in names]
        if rng.random() < 0.05:
            example.label.value = 1.5  # a regression label: not this classifier's
        else:
            example.label.class_label = int(rng.integers(2))
        example.prediction.predicted_class = int(rng.integers(2))
        rows.append(LabeledRow(TOPIC, partition, offset, ts, example, f"00-t{i % 7}-s-01"))
    return rows


class Reference:
    """The same rows, read the plain way: every row in memory."""

    def __init__(self, rows):
        seen, self.rows = set(), []
        for row in rows:
            e = row.example
            if (row.partition, row.offset) in seen:
                continue
            seen.add((row.partition, row.offset))
            if e.model_name != "churn" or not set(FEATURES) <= set(e.feature_names):
                continue
            position = {n: i for i, n in enumerate(e.feature_names)}
            self.rows.append({
                "key": (row.ts_ms, row.partition, row.offset), "id": e.prediction_id,
                "X": [e.features[position[n]] for n in FEATURES],
                "y": float(e.label.class_label), "valid": e.label.HasField("class_label"),
                "role": e.role, "version": e.model_version,
                "predicted": float(e.prediction.predicted_class)})
        self.rows.sort(key=lambda r: r["key"])

    def eligible(self):
        return [r for r in self.rows if r["role"] != SHADOW and r["valid"]]

    def window(self, size, fraction):
        recent = self.eligible()[-size:]
        ranges = {}
        for r in recent:
            _, p, o = r["key"]
            a, b = ranges.get(p, (o, o))
            ranges[p] = (min(a, o), max(b, o))
        rows = [r for r in self.eligible()
                if r["key"][1] in ranges
                and ranges[r["key"][1]][0] <= r["key"][2] <= ranges[r["key"][1]][1]]
        n_holdout = math.ceil(len(rows) * fraction)
        return rows[:len(rows) - n_holdout], rows[len(rows) - n_holdout:], ranges

    def served(self, version, role, last, since=0):
        return [r for r in self.rows if r["version"] == version and r["role"] == role
                and r["valid"] and r["key"][0] >= since][-last:]


def deliver(dataset, rows, rng):
    """In consumer batches, some batches delivered twice (a re-delivery after a crash)."""
    start = 0
    while start < len(rows):
        size = int(rng.integers(5, 60))
        batch = rows[start:start + size]
        dataset.append(batch)
        if rng.random() < 0.2:
            dataset.append(batch[len(batch) // 2:])
        start += size


@pytest.fixture(params=[1, 2])
def world(request, tmp_path):
    rng = np.random.default_rng(request.param)
    rows = make_rows(rng, 2_500)
    dataset = Dataset(tmp_path, [spec()], tail_rows=120)
    deliver(dataset, rows, rng)
    return dataset, Reference(rows), tmp_path


def ids(rows):
    return [r["id"] for r in rows]


@pytest.mark.parametrize("size,fraction", [(100, 0.2), (777, 0.25), (10_000, 0.1), (1, 0.0)])
def test_a_streamed_window_is_the_window_the_whole_data_gives(world, size, fraction):
    dataset, reference, tmp_path = world
    train, holdout, ranges = reference.window(size, fraction)
    for source in (dataset, _reloaded(tmp_path)):
        window = source.window("churn", size, fraction)
        try:
            assert {p: (a, b) for _, p, a, b in window.ranges} == ranges
            got = window.prediction_ids()
            assert sorted(got[:len(train)]) == sorted(ids(train))
            assert got[len(train):] == ids(holdout)  # the holdout in key order
            assert window.X_holdout.tolist() == [r["X"] for r in holdout]
            by_id = {r["id"]: r for r in train}
            train_X = np.asarray(window.X_train).reshape(-1, len(FEATURES))
            assert train_X.tolist() == [by_id[i]["X"] for i in got[:len(train)]]
            assert window.y_train.tolist() == [by_id[i]["y"] for i in got[:len(train)]]
            assert window.train_until == (max(r["key"] for r in train) if train else (0, 0, -1))
            plan = source.plan(spec(), window)
            assert plan.expected_rows == len(train)
            assert {s.partition for s in plan.slices} <= set(ranges)
            assert set(window.traceparents) <= {f"00-t{i}-s-01" for i in range(7)}
        finally:
            window.close()
        assert not list((tmp_path / "spill").rglob("*.f64"))  # the spill is gone


def test_live_checks_answer_alike_from_the_tail_and_from_the_segments(world):
    dataset, reference, tmp_path = world
    for source in (dataset, _reloaded(tmp_path), _reloaded(tmp_path, tail_rows=1_000_000)):
        for version in (1, 2, 3):
            for last in (10, 100, 400):
                want = reference.served(version, CHAMPION, last)
                got = source.served("churn", version, CHAMPION, last)
                assert got.y.tolist() == [r["y"] for r in want]
                assert got.X.tolist() == [r["X"] for r in want]
                assert got.predicted.tolist() == [r["predicted"] for r in want]
                since = want[len(want) // 2]["key"][0]
                got = source.served("churn", version, CHAMPION, last, since_ts=since)
                assert got.y.tolist() == [r["y"] for r in reference.served(
                    version, CHAMPION, last, since)]
            first = [r for r in reference.rows if r["version"] == version
                     and r["role"] == CHAMPION and r["valid"]][:150]
            got = source.first_served("churn", version, CHAMPION, 150)
            assert got.X.tolist() == [r["X"] for r in first]
            assert got.first_ts == first[0]["key"][0]
        recent = [r["X"] for r in reference.rows if r["role"] != SHADOW][-200:]
        assert source.recent_features("churn", 200).tolist() == recent
        assert source.total("churn") == sum(r["role"] != SHADOW for r in reference.rows)


def test_a_lineage_reference_is_its_rows_or_an_even_sample_of_them(world):
    dataset, reference, _ = world
    _, _, ranges = reference.window(500, 0.2)
    lineage = [(TOPIC, p, a, b) for p, (a, b) in ranges.items()]
    inside = [r for r in reference.rows if r["role"] != SHADOW and r["key"][1] in ranges
              and ranges[r["key"][1]][0] <= r["key"][2] <= ranges[r["key"][1]][1]]
    whole = dataset.features_in("churn", lineage)
    assert sorted(map(tuple, whole.tolist())) == sorted(tuple(r["X"]) for r in inside)
    sample = dataset.features_in("churn", lineage, limit=50)
    assert 25 <= len(sample) <= 50
    assert {tuple(x) for x in sample.tolist()} <= {tuple(r["X"]) for r in inside}


def test_memory_held_is_the_tail_and_the_catalog_not_the_rows(tmp_path):
    rng = np.random.default_rng(3)
    dataset = Dataset(tmp_path, [spec()], tail_rows=100)
    deliver(dataset, make_rows(rng, 3_000, partitions=1), rng)
    model = dataset._models["churn"]
    rows = model.tail.rows()
    assert len(rows) <= 100 + 60  # the capacity, and at most one batch beyond it
    assert not model.tail.complete
    assert all(not hasattr(e, "X") for e in model.entries)


def _reloaded(folder, tail_rows=120):
    fresh = Dataset(folder, [spec()], tail_rows=tail_rows)
    fresh.load()
    return fresh


def test_a_window_for_an_engine_that_reads_the_segments_itself_is_not_spilled(world):
    dataset, _, tmp_path = world
    spilled = dataset.window("churn", 500, 0.2)
    counted = dataset.window("churn", 500, 0.2, spill=False)
    try:
        assert counted.X_train.shape == (0, len(FEATURES))
        assert counted.y_train.tolist() == spilled.y_train.tolist()
        assert counted.train_digest == spilled.train_digest
        assert counted.X_holdout.tolist() == spilled.X_holdout.tolist()
        assert dataset.plan(spec(), counted) == dataset.plan(spec(), spilled)
    finally:
        spilled.close()
        counted.close()
    assert not list((tmp_path / "spill").rglob("*.f64"))


def test_loading_twice_changes_nothing(world):
    _, reference, tmp_path = world
    again = _reloaded(tmp_path)
    before = again.served("churn", 1, CHAMPION, 100).y.tolist()
    assert again.load() == 0
    assert again.total("churn") == sum(r["role"] != SHADOW for r in reference.rows)
    assert again.served("churn", 1, CHAMPION, 100).y.tolist() == before
