"""The lifecycle table: every legal transition works, every other one is refused."""

import pytest

from permits.lifecycle import (
    ANNOTATIONS,
    TERMINAL,
    TRANSITIONS,
    Event,
    IllegalTransition,
    State,
    mermaid,
    next_state,
    state_after,
)

MOVES = [e for e in Event if e not in ANNOTATIONS and e is not Event.CREATED]


@pytest.mark.parametrize(("state", "event"), [(s, e) for s in State for e in MOVES])
def test_every_pair_is_legal_or_refused(state, event):
    if (state, event) in TRANSITIONS:
        assert next_state(state, event) == TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalTransition, match=f"'{event.value}' is not possible when the case is"):
            next_state(state, event)


@pytest.mark.parametrize(("state", "event"), [(s, e) for s in State for e in ANNOTATIONS])
def test_annotations_keep_the_state(state, event):
    if state in ANNOTATIONS[event]:
        assert next_state(state, event) is state
    else:
        with pytest.raises(IllegalTransition):
            next_state(state, event)


def test_terminal_states_have_no_way_out():
    for (s, _e) in TRANSITIONS:
        assert s not in TERMINAL


def test_every_state_is_reachable_from_draft():
    # estimates_received is entered when the last outstanding estimate is recorded (a flag on the event)
    reached = {State.DRAFT, State.ESTIMATES_RECEIVED}
    frontier = [State.DRAFT, State.ESTIMATES_RECEIVED]
    while frontier:
        s = frontier.pop()
        for (a, _e), b in TRANSITIONS.items():
            if a is s and b not in reached:
                reached.add(b)
                frontier.append(b)
    assert reached == set(State)


def test_last_estimate_moves_to_received():
    assert next_state(State.ESTIMATES_REQUESTED, Event.ESTIMATE_RECORDED) is State.ESTIMATES_REQUESTED
    assert next_state(State.ESTIMATES_REQUESTED, Event.ESTIMATE_RECORDED,
                      all_estimates_in=True) is State.ESTIMATES_RECEIVED


def test_full_path_folds_to_active():
    path = [Event.CREATED, Event.SUBMITTED, Event.RETURNED, Event.RESUBMITTED, Event.COMPLETENESS_CONFIRMED,
            Event.ESTIMATES_REQUESTED, Event.ESTIMATE_RECORDED, Event.ESTIMATE_SENT, Event.ACCEPTED,
            Event.PRESENTED, Event.APPROVED, Event.EXTRACTION_STARTED, Event.DELIVERED, Event.ACTIVATED]
    flags = [e is Event.ESTIMATE_RECORDED for e in path]
    assert state_after(list(zip(path, flags, strict=True))) is State.ACTIVE


def test_withdraw_only_before_decision():
    assert next_state(State.PRESENTED, Event.WITHDRAWN) is State.WITHDRAWN
    with pytest.raises(IllegalTransition):
        next_state(State.APPROVED, Event.WITHDRAWN)


def test_diagram_is_generated_from_the_table():
    text = mermaid()
    assert text.count("-->") == len(TRANSITIONS) + len(TERMINAL) + 1
