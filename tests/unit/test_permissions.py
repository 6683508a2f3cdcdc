"""The permission matrix, exhaustively, and the paired check_can / can."""

import pytest

from permits.lifecycle import State
from permits.permissions import ACTIONS, AUTHORITY_ROLES, PermissionDenied, Role, can, check_can, matrix, permitted

CELLS = matrix()


def test_matrix_covers_every_state_role_action():
    assert len(CELLS) == len(ACTIONS) * len(State) * len(Role)


def test_every_action_is_possible_somewhere_for_someone():
    for action in ACTIONS:
        assert any(v for (a, _s, _r), v in CELLS.items() if a == action), action


@pytest.mark.parametrize(("action", "state", "role"), list(CELLS))
def test_check_can_agrees_with_the_matrix(action, state, role):
    # A user who holds exactly this role and is not on the case (unless the role is a case role).
    applicant = "u" if role is Role.APPLICANT else "someone-else"
    members = {"u"} if role is Role.MEMBER else set()
    kwargs = dict(user="u", roles={role}, state=state, applicant=applicant, members=members)
    assert can(action, **kwargs) == CELLS[(action, state, role)]
    if not CELLS[(action, state, role)]:
        with pytest.raises(PermissionDenied) as exc:
            check_can(action, **kwargs)
        if permitted(action, next(iter(ACTIONS[action].roles)), state):
            assert "only" in str(exc.value)  # says who may do it


def test_denial_names_who_may():
    with pytest.raises(PermissionDenied, match="only decider may grant the permit"):
        check_can("approve", user="h", roles={Role.HANDLER}, state=State.PRESENTED, applicant="a", members=set())


@pytest.mark.parametrize("action", [a for a, x in ACTIONS.items() if x.roles <= AUTHORITY_ROLES])
def test_no_authority_action_on_own_case(action):
    states = [s for s in State if permitted(action, next(iter(ACTIONS[action].roles)), s)]
    for state in states:
        for case_role in ("applicant", "member"):
            kwargs = dict(user="u", roles=set(ACTIONS[action].roles), state=state,
                          applicant="u" if case_role == "applicant" else "x",
                          members={"u"} if case_role == "member" else set())
            with pytest.raises(PermissionDenied) as exc:
                check_can(action, **kwargs)
            assert exc.value.code == "conflict_of_interest"


def test_every_action_has_a_typed_body_and_every_body_an_action():
    from permits.actions import ACTION_BODIES

    assert set(ACTION_BODIES) == {name for name, a in ACTIONS.items() if a.event is not None}
    for model in ACTION_BODIES.values():
        assert model.model_config["extra"] == "forbid"


def test_every_open_state_leaves_the_authority_a_way_forward_or_out():
    """Issue 12 finding 14: no state may leave a case stuck for the handler (or decider)."""
    from permits.lifecycle import ANNOTATIONS, TERMINAL, TRANSITIONS

    authority = {Role.HANDLER, Role.DECIDER, Role.SYSTEM}
    for state in State:
        if state in TERMINAL or state is State.DRAFT:
            continue
        exits = [name for name, a in ACTIONS.items() if a.event is not None and a.event not in ANNOTATIONS
                 and (state, a.event) in TRANSITIONS and TRANSITIONS[(state, a.event)] is not state
                 and a.roles & authority]
        assert exits, f"{state.value}: no handler, decider or system action leaves it"


def test_the_presenter_cannot_decide():
    from permits.permissions import SEPARATION_OF_DUTIES

    for action, earlier in SEPARATION_OF_DUTIES.items():
        with pytest.raises(PermissionDenied, match=f"took '{earlier}'") as exc:
            check_can(action, user="hd", roles={Role.HANDLER, Role.DECIDER}, state=State.PRESENTED,
                      applicant="alice", members=set(), took={earlier: "hd"})
        assert exc.value.code == "conflict_of_interest"
        assert check_can(action, user="dora", roles={Role.DECIDER}, state=State.PRESENTED, applicant="alice",
                         members=set(), took={earlier: "hd"}) is Role.DECIDER
