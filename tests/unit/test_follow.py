"""Which flow runs a recorded step resumes or starts (a pure rule), and the pause keys that say where a run
waits."""

import pytest

from flows.follow import ACTIVE, Plan, RunInfo, Subject, plan, subject_of
from flows.pauses import state_of_key, step_key
from permits.lifecycle import State
from secure_env.airlock.lifecycle import RequestState


@pytest.mark.parametrize("state", [*[s.value for s in State], *[s.value for s in RequestState]])
def test_a_pause_key_names_the_state_it_waits_in(state):
    for step in (0, 7):
        key = step_key(state, step)
        assert key == key.lower() and all(c.isalnum() or c == "-" for c in key)
        assert state_of_key(key) == state


def test_other_keys_name_no_state():
    assert state_of_key("1") is None and state_of_key("at-submitted") is None


@pytest.mark.parametrize("open_, runs, expected", [
    (True, [], Plan((), True)),  # nothing follows it yet
    (False, [], Plan((), False)),  # decided: nothing to follow
    (True, [RunInfo("a", "PAUSED", "submitted")], Plan(("a",), False)),  # moved on: resume
    (True, [RunInfo("a", "PAUSED", "complete")], Plan((), False)),  # still waiting there: leave it
    (True, [RunInfo("a", "PAUSED", None)], Plan(("a",), False)),  # unknown pause: resume, it re-reads
    (True, [RunInfo("a", "FAILED"), RunInfo("b", "CRASHED")], Plan((), True)),  # none follows: start one
    (True, [RunInfo("a", "RUNNING"), RunInfo("b", "FAILED")], Plan((), False)),
    (True, [RunInfo("a", "SCHEDULED")], Plan((), False)),
    (False, [RunInfo("a", "PAUSED", "presented")], Plan(("a",), False)),  # decided: resume so that it ends
    (True, [RunInfo("a", "COMPLETED")], Plan((), True)),
])
def test_plan_resumes_runs_whose_case_moved_on_and_starts_one_when_none_follows(open_, runs, expected):
    assert plan(open_, "complete", runs) == expected


def test_every_prefect_state_is_either_following_or_not():
    from prefect.client.schemas.objects import StateType

    following = {s.value for s in StateType} & ACTIVE
    assert following == ACTIVE  # no typo in the set
    assert {s.value for s in StateType} - ACTIVE == {"COMPLETED", "FAILED", "CRASHED", "CANCELLED", "CANCELLING"}


def test_events_name_their_subject():
    assert subject_of("permit.submitted", {"permit_id": "T-1"}) == Subject("case", "T-1")
    assert subject_of("output.submit", {"request_id": "OUT-T-1-1", "permit_id": "T-1"}) == Subject(
        "output", "OUT-T-1-1")
    assert subject_of("import.approved", {"permit_id": "T-1"}) is None
    assert Subject("case", "T-1").deployment.endswith("/application")
    assert Subject("output", "O").parameters == {"request_id": "O"}
