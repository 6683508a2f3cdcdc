"""The output request lifecycle as one table (issue 13, item 3), tested for completeness the way the permit
lifecycle is: every state x every event, reachability, and a way forward or out from every open state."""

import pytest

from secure_env.airlock.lifecycle import (
    TRANSITIONS,
    IllegalRequestTransition,
    RequestEvent,
    RequestState,
    next_request_state,
)

S, E = RequestState, RequestEvent
TERMINAL = {S.RELEASED, S.REJECTED, S.WITHDRAWN}


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("event", list(E))
def test_every_cell_is_a_transition_or_a_refusal_naming_what_is_possible(state, event):
    if (state, event) in TRANSITIONS:
        assert next_request_state(state, event) is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalRequestTransition) as exc:
            next_request_state(state, event)
        possible = sorted(e.value for (s, e) in TRANSITIONS if s is state)
        assert f"possible: {', '.join(possible) or 'nothing'}" in str(exc.value)
        assert exc.value.code == "illegal_state" and exc.value.http_status == 409


def test_every_state_is_reachable_from_pending_and_every_event_is_used():
    seen, frontier = {S.PENDING}, [S.PENDING]
    while frontier:
        s = frontier.pop()
        for (a, _e), b in TRANSITIONS.items():
            if a is s and b not in seen:
                seen.add(b)
                frontier.append(b)
    assert seen == set(S)
    assert {e for (_s, e) in TRANSITIONS} == set(E)


def test_terminal_states_are_final_and_every_open_state_can_end():
    for s in TERMINAL:
        assert not [e for (a, e) in TRANSITIONS if a is s], s
    for s in set(S) - TERMINAL:
        assert (s, E.WITHDRAW) in TRANSITIONS, f"the requester cannot withdraw from {s}"


def test_nothing_is_released_without_approval():
    assert [a for (a, e) in TRANSITIONS if e is E.RELEASE] == [S.APPROVED]
    assert {a for (a, e), b in TRANSITIONS.items() if b is S.APPROVED} == {S.REVIEWED, S.PARTIALLY_REVIEWED}
