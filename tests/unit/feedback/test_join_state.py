"""The join state machine, including replays after an aborted transaction."""

from __future__ import annotations

from flywheel.feedback.join import (
    FEEDBACK,
    PREDICTIONS,
    Entry,
    JoinPolicy,
    JoinState,
    Position,
    Validity,
    on_feedback,
    on_prediction,
)
from flywheel.v1 import common_pb2, events_pb2

POLICY = JoinPolicy(allowed_lateness_s=600)


def pred(pid="p1", t=1000.0, role=common_pb2.MODEL_ROLE_CHAMPION):
    p = events_pb2.PredictionLogged(prediction_id=pid, model_name="m", model_version=3,
                                    role=role, features=[1.0, 2.0])
    p.prediction_time.FromNanoseconds(int(t * 1e9))
    return p


def fb(label=1, t=1010.0, source=common_pb2.LABEL_SOURCE_HUMAN):
    f = events_pb2.FeedbackRecorded(prediction_id="p1", label=common_pb2.Label(class_label=label),
                                    source=source)
    f.event_time.FromNanoseconds(int(t * 1e9))
    return f


P0, F0, F1 = Position(PREDICTIONS, 0, 0), Position(FEEDBACK, 0, 0), Position(FEEDBACK, 0, 1)


def test_prediction_then_feedback_joins_once():
    state = JoinState()
    assert not on_prediction(state, pred(), P0, "e", POLICY).labeled
    out = on_feedback(state, fb(), F0, "e", POLICY)
    assert [e.prediction_id for e in out.labeled] == ["p1"]
    example = out.labeled[0]
    assert example.model_version == 3 and list(example.features) == [1.0, 2.0]
    again = on_feedback(state, fb(label=0), F1, "e", POLICY)
    assert not again.labeled and again.duplicate_feedback == 1


def test_feedback_first_waits_and_first_wins():
    state = JoinState()
    assert on_feedback(state, fb(label=1), F0, "e", POLICY).pending_feedback == 1
    assert on_feedback(state, fb(label=0), F1, "e", POLICY).duplicate_feedback == 1
    out = on_prediction(state, pred(), P0, "e", POLICY)
    assert out.labeled[0].label.class_label == 1


def test_late_feedback_goes_to_late_not_labeled():
    state = JoinState()
    on_prediction(state, pred(t=1000), P0, "e", POLICY)
    out = on_feedback(state, fb(t=1000 + 601), F0, "e", POLICY)
    assert len(out.late) == 1 and not out.labeled
    assert on_feedback(state, fb(), F1, "e", POLICY).duplicate_feedback == 1


def test_shadow_prediction_joined_under_the_same_key():
    state = JoinState()
    on_prediction(state, pred("p1"), P0, "e", POLICY)
    on_prediction(state, pred("p1-s", role=common_pb2.MODEL_ROLE_SHADOW),
                  Position(PREDICTIONS, 0, 1), "e", POLICY)
    out = on_feedback(state, fb(), F0, "e", POLICY)
    assert sorted(e.prediction_id for e in out.labeled) == ["p1", "p1-s"]


def test_model_labels_refused_unless_allowed():
    state = JoinState()
    on_prediction(state, pred(), P0, "e", POLICY)
    model = fb(source=common_pb2.LABEL_SOURCE_MODEL)
    assert on_feedback(state, model, F0, "e", POLICY).refused_model_labels == 1
    allowed = JoinPolicy(600, allow_model_labels=True)
    assert on_feedback(state, model, F0, "e", allowed).labeled


def _stored(state: JoinState) -> dict[str, bytes]:
    return {name: entry.encode() for name, entry in state.fields.items()}


def test_replay_after_abort_emits_again_exactly_once():
    # Epoch "a" processed the prediction (committed at offset 1) and the feedback (its
    # transaction aborted); Redis kept both writes.
    state = JoinState()
    on_prediction(state, pred(), P0, "a", POLICY)
    assert on_feedback(state, fb(), F0, "a", POLICY).labeled
    stored = _stored(state)
    # Replay under epoch "b": predictions committed up to 1, feedback up to 0.
    validity = Validity("b", {(PREDICTIONS, 0): 1, (FEEDBACK, 0): 0})
    replay = JoinState.from_stored(stored, validity)
    assert set(replay.fields) == {"p:p1"}
    out = on_feedback(replay, fb(), F0, "b", POLICY)
    assert len(out.labeled) == 1 and out.duplicate_feedback == 0


def test_committed_emission_is_not_repeated():
    state = JoinState()
    on_prediction(state, pred(), P0, "a", POLICY)
    on_feedback(state, fb(), F0, "a", POLICY)
    validity = Validity("b", {(PREDICTIONS, 0): 1, (FEEDBACK, 0): 1})
    replay = JoinState.from_stored(_stored(state), validity)
    out = on_feedback(replay, fb(label=0), F1, "b", POLICY)
    assert not out.labeled and out.duplicate_feedback == 1


def test_replay_in_another_order_still_joins_once():
    # Aborted attempt saw the feedback first, then the prediction; the replay sees the
    # prediction first: still one labeled example, and the feedback is not a duplicate.
    state = JoinState()
    on_feedback(state, fb(), F0, "a", POLICY)
    on_prediction(state, pred(), P0, "a", POLICY)
    validity = Validity("b", {(PREDICTIONS, 0): 0, (FEEDBACK, 0): 0})
    replay = JoinState.from_stored(_stored(state), validity)
    assert not replay.fields
    assert not on_prediction(replay, pred(), P0, "b", POLICY).labeled
    out = on_feedback(replay, fb(), F0, "b", POLICY)
    assert len(out.labeled) == 1 and out.duplicate_feedback == 0


def test_entry_round_trip():
    entry = Entry("ep", Position(FEEDBACK, 4, 99), b"a:b:c")
    assert Entry.decode(entry.encode()) == entry
