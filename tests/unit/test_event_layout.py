"""Events checked many at once against a learned layout: sound (whatever a layout accepts
is an event the field-by-field walk accepts, with the key and id where the layout says),
and useful (events that only differ in their values share one layout)."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel.bench.workload import random_event
from flywheel.common.event_layout import LayoutScreen, learn
from flywheel.common.event_wire import split_repeated, varint
from flywheel.common.spec import load_spec
from flywheel.common.validation import EventValidator
from flywheel.ingest.core import Ingestor, Outcome
from flywheel.v1 import events_pb2

SPEC = load_spec(Path(__file__).resolve().parents[2] / "flywheel.yaml")
CUSTOMER = SPEC.entity("customer")
VALIDATOR = EventValidator(SPEC)
RULES = VALIDATOR.rules["customer"]
EVENT_TIME_MS = int(time.time() * 1000) - 60_000


def alike(seed: int, event_id: str = "") -> events_pb2.Event:
    """Events of one layout: same id lengths, whole-second times, the same segment and
    visits sizes; only the values differ."""
    event = random_event(CUSTOMER, f"c{seed:04d}", EVENT_TIME_MS // 1000 * 1000,
                         random.Random(seed), event_id=event_id)
    event.features["segment"].string_value = "gold"
    event.features["visits"].int64_value = 5
    return event


def message_of(encoded: list[bytes]) -> bytes:
    """An encoded IngestRequest holding these event encodings, valid or not."""
    return b"".join(b"\x0a" + varint(len(e)) + e for e in encoded)


def verdicts(encoded: list[bytes], now: float | None = None):
    message = message_of(encoded)
    spans = split_repeated(message)
    screen = LayoutScreen([RULES], min_group=1)
    return message, spans, screen.screen(message, spans, time.time() if now is None else now)


def test_events_of_one_layout_are_accepted_together() -> None:
    encoded = [alike(seed).SerializeToString() for seed in range(40)]
    assert len({len(e) for e in encoded}) == 1
    message, spans, layouts = verdicts(encoded)
    assert all(layout is layouts[0] for layout in layouts) and layouts[0] is not None
    layout = layouts[0]
    for (start, _), seed in zip(spans, range(40), strict=True):
        key_at = start + layout.key_at
        assert message[key_at:key_at + layout.key_size] == f"c{seed:04d}".encode()
    assert layout.id_size == 0


def test_event_ids_are_located() -> None:
    encoded = [alike(seed, event_id=f"id-{seed:05d}").SerializeToString() for seed in range(10)]
    message, spans, layouts = verdicts(encoded)
    for (start, _), layout, seed in zip(spans, layouts, range(10), strict=True):
        assert layout is not None
        at = start + layout.id_at
        assert message[at:at + layout.id_size] == f"id-{seed:05d}".encode()


def test_non_finite_values_and_future_times_are_refused() -> None:
    nan = alike(1)
    nan.features["f03"].double_value = math.nan
    inf = alike(2)
    inf.features["f07"].double_value = -math.inf
    vector_nan = alike(3)
    vector_nan.vector.values[2] = math.inf
    future = alike(4)
    future.event_time.FromSeconds(int(time.time()) + 3600)
    encoded = [alike(0).SerializeToString()] + [
        e.SerializeToString() for e in (nan, inf, vector_nan, future)
    ]
    assert len({len(e) for e in encoded}) == 1
    _, _, layouts = verdicts(encoded)
    assert layouts[0] is not None
    assert layouts[1:] == [None, None, None, None]


def test_an_event_the_expression_refuses_teaches_nothing() -> None:
    future = alike(4)
    future.event_time.FromSeconds(int(time.time()) + 3600)
    assert learn(b"\x12\x00", RULES) is None
    _, _, layouts = verdicts([future.SerializeToString()] * 3)
    assert layouts == [None, None, None]


@settings(max_examples=1500, deadline=None)
@given(
    st.integers(0, 50),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_whatever_a_layout_accepts_the_walk_accepts(
    seed: int, with_id: bool, changes: list[tuple[int, int]]
) -> None:
    template = alike(seed, event_id="e" * 20 if with_id else "").SerializeToString()
    changed = bytearray(template)
    for at, byte in changes:
        changed[at % len(changed)] = byte
    now = time.time()
    message, spans, layouts = verdicts([template, bytes(changed)], now)
    assert layouts[0] is not None
    if layouts[1] is None:
        return
    layout = layouts[1]
    try:
        event = events_pb2.Event.FromString(bytes(changed))
    except DecodeError:
        raise AssertionError(f"accepted an undecodable event: {bytes(changed)!r}") from None
    assert VALIDATOR.problems(event, now) == []
    assert RULES.encoded_event.fullmatch(bytes(changed))
    start = spans[1][0]
    assert message[start + layout.key_at:start + layout.key_at + layout.key_size] == \
        event.entity_id.encode()
    if layout.id_size:
        at = start + layout.id_at
        assert message[at:at + layout.id_size] == event.event_id.encode()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 199), st.integers(0, 10_000), st.integers(0, 255)),
                min_size=0, max_size=12))
def test_ingest_screens_big_batches_as_the_walk_does(changes: list[tuple[int, int, int]]) -> None:
    batch = [bytearray(alike(seed).SerializeToString()) for seed in range(200)]
    for which, at, byte in changes:
        batch[which][at % len(batch[which])] = byte
    encoded = [bytes(e) for e in batch]
    _screens_as_the_walk_does(Ingestor(VALIDATOR, None, None), encoded)  # type: ignore[arg-type]


def test_one_screen_over_many_batches_of_mixed_layouts_screens_as_the_walk_does() -> None:
    """Several layouts per event size (ids, nanos, counts and segments of varying sizes),
    some events broken, one screen kept across batches as ingest keeps it: layouts are
    learned, reordered and tried with the head filter, and every verdict is the walk's."""
    rng = random.Random(7)
    ingestor = Ingestor(VALIDATOR, None, None)  # type: ignore[arg-type]
    for _batch in range(6):
        batch = []
        for _ in range(400):
            event = random_event(CUSTOMER, f"c{rng.randrange(10 ** rng.randrange(1, 5))}",
                                 EVENT_TIME_MS - rng.randrange(0, 10_000), rng)
            data = bytearray(event.SerializeToString())
            if rng.random() < 0.05:
                data[rng.randrange(len(data))] = rng.randrange(256)
            batch.append(bytes(data))
        _screens_as_the_walk_does(ingestor, batch)
    screen = ingestor._layouts
    heads = sum(len(known) for known in screen._heads.values())
    bodies = sum(len(known) for known in screen._bodies.values())
    assert heads > 3 and bodies > 3, "the batches should hold several heads and bodies"
    message = b"".join(b"\x0a" + varint(len(e)) + e for e in batch)
    spans = split_repeated(message)
    verdict = screen.screen(message, spans, time.time())
    assert sum(layout is not None for layout in verdict) > 0.8 * len(spans)


def _screens_as_the_walk_does(ingestor: Ingestor, encoded: list[bytes]) -> None:
    count_sent = len(encoded)
    outcome = Outcome()
    now = time.time()
    records, count = ingestor._screen(message_of(encoded), 0, outcome, keep_ids=True)
    assert count == count_sent
    expected_ok = []
    for index, data in enumerate(encoded):
        try:
            event = events_pb2.Event.FromString(data)
        except DecodeError:
            continue
        if not VALIDATOR.problems(event, now):
            expected_ok.append((index, event))
    rejected = {r.index for r in outcome.rejections}
    assert rejected == set(range(count_sent)) - {index for index, _ in expected_ok}
    assert len(records) == len(expected_ok) == len(outcome.accepted_event_ids)
    for (key, value), (_, sent), event_id in zip(
        records, expected_ok, outcome.accepted_event_ids, strict=True
    ):
        published = events_pb2.Event.FromString(value)
        assert key == sent.entity_id.encode()
        assert published.event_id == event_id
        published.event_id = sent.event_id
        assert published == sent


def test_a_body_learned_for_one_entity_type_never_passes_an_event_of_another() -> None:
    """Two types whose bodies are alike byte for byte, NaN allowed in one only: a NaN event
    of the strict type is refused, whatever the loose type's events taught."""
    from flywheel.common.spec import FlywheelSpec

    spec = FlywheelSpec.model_validate({"entities": [
        {"name": "strict", "features": [{"name": "x"}]},
        {"name": "loose", "features": [{"name": "x", "allow_nan": True}]},
    ]})
    validator = EventValidator(spec)
    seconds = EVENT_TIME_MS // 1000

    def event(entity_type: str, value: float) -> bytes:
        built = events_pb2.Event(entity_type=entity_type, entity_id="e1")
        built.event_time.FromSeconds(seconds)
        built.features["x"].double_value = value
        return built.SerializeToString()

    ingestor = Ingestor(validator, None, None)  # type: ignore[arg-type]
    # The loose type teaches a body with a NaN; the strict type's good events teach its head.
    batch = [event("loose", math.nan) for _ in range(20)] + [event("strict", 1.0)] * 20
    outcome = Outcome()
    records, _ = ingestor._screen(message_of(batch), 0, outcome, keep_ids=False)
    assert len(records) == 40
    bad = [event("strict", math.nan)] * 20 + [event("loose", math.nan)] * 20
    outcome = Outcome()
    records, _ = ingestor._screen(message_of(bad), 0, outcome, keep_ids=False)
    assert len(records) == 20
    assert [r.index for r in outcome.rejections] == list(range(20))
    assert {r.problem.field for r in outcome.rejections} == {"features.x"}


def test_events_with_heads_longer_than_the_gathered_bytes_are_screened_the_slow_way() -> None:
    batch = [alike(seed, event_id=f"{seed:0100d}").SerializeToString() for seed in range(20)]
    for seed in range(20):
        event = alike(seed)
        event.entity_id = "k" * 200 + str(seed)
        batch.append(event.SerializeToString())
    message = message_of(batch)
    spans = split_repeated(message)
    assert LayoutScreen([RULES]).screen(message, spans, time.time())[:20] != [None] * 20
    assert LayoutScreen([RULES]).screen(message, spans, time.time())[20:] == [None] * 20
    _screens_as_the_walk_does(Ingestor(VALIDATOR, None, None), batch)  # type: ignore[arg-type]
