"""One authorisation model (issue 13, item 3): each stage's table, exhaustively, and each stage's domain
function refusing an actor without the right (not only its command line)."""

from itertools import chain, combinations

import pytest

from flows import data_request as data_requests
from flows import retention
from permits.report import REPORT
from secure_env.airlock import dp
from secure_env.airlock import outputs as A
from secure_env.airlock.rules import OUTPUTS, file_status
from secure_env.workspace import ingress
from secure_env.workspace import provision as W
from secure_env.workspace import server as S
from secure_env.workspace.rules import WORKSPACE
from tests.factories import make_case, make_delivery, make_staff, make_user
from toisio import identity
from toisio.audit_access import AUDIT
from toisio.authz import PermissionDenied, Table, rule
from toisio.identity import SYSTEM, Actor, Role

R = Role
#: The tables as the service's rules say they are, written out independently of the code: action -> (who may,
#: who is barred).  A change to a table must change this too.
EXPECTED = {
    "workspace": (WORKSPACE, {
        "create": ({R.HANDLER, R.SYSTEM}, set()),
        "start": ({R.HANDLER, R.SYSTEM, R.OPERATOR, "named"}, set()),
        "stop": ({R.HANDLER, R.SYSTEM, R.OPERATOR, "named"}, set()),
        "status": ({R.HANDLER, R.SYSTEM, R.AUDITOR, R.OPERATOR, "named"}, set()),
        "token": ({R.HANDLER, R.SYSTEM}, set()),
        "own_token": ({"named"}, set()),
        "destroy": ({R.HANDLER, R.SYSTEM, R.OPERATOR}, set()),
        "audit": ({R.HANDLER, R.AUDITOR, R.SYSTEM}, set()),
    }),
    "output": (OUTPUTS, {
        "create": ({"named"}, set()),
        "create_for_service": ({R.HANDLER, R.SYSTEM}, set()),
        "add_file": ({"requester"}, set()),
        "describe_group": ({"requester"}, set()),
        "reply": ({"requester"}, set()),
        "submit": ({"requester"}, set()),
        "withdraw": ({"requester"}, set()),
        "view": ({"requester", "holder", R.OUTPUT_CHECKER, R.AUDITOR}, set()),
        "list": ({"named", "holder", R.HANDLER, R.OUTPUT_CHECKER, R.AUDITOR, R.SYSTEM}, set()),
        "review": ({R.OUTPUT_CHECKER}, {"requester", "named"}),
        "release": ({R.OUTPUT_CHECKER}, {"requester", "named"}),
        "download": ({"named", "holder"}, set()),
        "discard": ({R.OPERATOR, R.SYSTEM}, set()),
    }),
    "retention": (retention.RETENTION, {
        "view": ({R.HANDLER, R.AUDITOR, R.OPERATOR, R.SYSTEM}, set()),
    }),
    "import": (ingress.IMPORTS, {
        "request": ({"named"}, set()),
        "decide": ({R.OUTPUT_CHECKER}, {"requester", "named"}),
        "view": ({"requester", "named", R.OUTPUT_CHECKER, R.HANDLER, R.AUDITOR}, set()),
    }),
    "data_request": (data_requests.STATISTICS, {
        "produce": ({R.HANDLER, R.SYSTEM}, set()),
    }),
    "audit": (AUDIT, {
        "search": ({R.AUDITOR}, set()),
        "verify": ({R.AUDITOR, R.OPERATOR}, set()),
        "reanchor": ({R.OPERATOR}, set()),
    }),
    "report": (REPORT, {
        "indicators": ({R.HANDLER, R.DECIDER, R.AUDITOR, R.OPERATOR}, set()),
    }),
    "dp": (dp.DP, {
        "set_budget": ({R.DECIDER, R.SYSTEM}, set()),
        "spend": ({"named", R.SYSTEM}, set()),
        "view_budget": ({"named", R.HANDLER, R.DECIDER, R.OUTPUT_CHECKER, R.AUDITOR, R.SYSTEM}, set()),
    }),
}


def _subsets(items):
    items = sorted(items)
    return chain.from_iterable(combinations(items, n) for n in range(len(items) + 1))


@pytest.mark.parametrize("stage", sorted(EXPECTED))
def test_every_cell_of_every_table(stage):
    """Every action x every role x every combination of relations, against the expected table."""
    table, expected = EXPECTED[stage]
    assert set(table.rules) == set(expected), "an action was added or removed: update EXPECTED"
    checked = 0
    for action, (allowed, barred) in expected.items():
        allowed = {str(a) for a in allowed}
        for role in [None, *Role]:
            for rels in _subsets(table.relations):
                actor = Actor("u", frozenset({role}) if role else frozenset())
                held = set(rels) | ({str(role)} if role else set())
                should = bool(held & allowed) and not (set(rels) & barred)
                assert table.can(action, actor, rels) == should, (stage, action, role, rels)
                if not should:
                    with pytest.raises(PermissionDenied) as exc:
                        table.check_can(action, actor, rels)
                    assert ("only" in str(exc.value)) or exc.value.code == "conflict_of_interest"
                checked += 1
    assert checked == len(expected) * (len(Role) + 1) * 2 ** len(table.relations)


def test_a_refusal_says_who_may_and_a_conflict_says_why():
    with pytest.raises(PermissionDenied, match="bob may not create this workspace: only a handler or the service "
                                               "may") as exc:
        WORKSPACE.check_can("create", Actor("bob"), {"named"})
    assert exc.value.code == "forbidden" and exc.value.http_status == 403
    checker = Actor("olga", frozenset({Role.OUTPUT_CHECKER}))
    with pytest.raises(PermissionDenied, match="olga is the request's author and so may not review") as exc:
        OUTPUTS.check_can("review", checker, {"requester"})
    assert exc.value.code == "conflict_of_interest"


def test_a_table_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown roles or relations"):
        Table("x", {"a": rule("do a", {"wizard"})}, {})
    with pytest.raises(ValueError, match="only relations can bar"):
        Table("x", {"a": rule("do a", {Role.HANDLER}, barred={Role.AUDITOR})}, {})
    with pytest.raises(ValueError, match="unknown relations"):
        WORKSPACE.check_can("start", Actor("u"), {"cousin"})


def test_pairs_and_docs_come_from_the_table():
    check, can = OUTPUTS.pair("review")
    assert check.__name__ == "check_can_review" and can.__name__ == "can_review"
    assert can(Actor("o", frozenset({Role.OUTPUT_CHECKER}))) and not can(Actor("o"))
    assert "| `review` (review this request's outputs) | an output checker | an analyst named on the permit or " \
           "the request's author |" in OUTPUTS.describe()


# ---------------------------------------------------------------- file status: a pure function

@pytest.mark.parametrize("decisions,needed,status", [
    ([], 2, "pending"),
    (["approve"], 2, "pending"),
    (["approve", "approve"], 2, "approved"),
    (["approve", "reject"], 2, "conflicted"),
    (["approve", "reject", "approve"], 2, "approved"),
    (["approve", "reject", "reject"], 2, "rejected"),
    (["request_changes", "request_changes"], 2, "changes_requested"),
    (["reject", "reject"], 2, "rejected"),
    (["approve"], 1, "approved"),
    (["approve", "reject"], 1, "conflicted"),  # a second opinion that disagrees is not ignored
    (["approve", "approve"], 3, "pending"),
    (["approve", "approve", "approve"], 3, "approved"),
    (["approve", "approve", "reject"], 3, "conflicted"),
    (["approve", "approve", "reject", "approve"], 3, "approved"),
])
def test_file_status_follows_the_policy(decisions, needed, status):
    assert file_status(decisions, needed) == status


def test_the_airlock_uses_the_policys_number_of_approvals(svc, tmp_path):
    """`Policy.approvals_needed` decides (it was ignored, with 2 hard-coded)."""
    staff = make_staff(svc)
    permit = make_case(svc, staff).case_id
    checkers = [staff["oscar"], *(make_user(svc, u, ("output_checker",)) for u in ("olga", "otto"))]
    table = tmp_path / "t.csv"
    table.write_text("k,n\na,50\nb,60\n")
    bob = identity.Actor("bob")
    rid = A.create_request(svc, bob, permit)
    A.add_file(svc, bob, rid, table, {"description": "d", "method": "m", "index": "k"})
    A.submit(svc, bob, rid)
    for c in checkers[:2]:
        A.vote(svc, c, rid, "t.csv", "approve")
        A.submit_review(svc, c, rid)
    three = A.Policy(approvals_needed=3)
    with pytest.raises(A.AirlockError, match="not approved: t.csv \\(pending\\)"):
        A.decide(svc, checkers[0], rid, "approve", policy=three)
    A.vote(svc, checkers[2], rid, "t.csv", "approve")
    A.submit_review(svc, checkers[2], rid)
    assert A.decide(svc, checkers[0], rid, "approve", policy=three).value == "approved"


# ---------------------------------------------------------------- each stage's domain function refuses

@pytest.fixture
def world(svc, tmp_path):
    from datetime import date, timedelta

    staff = make_staff(svc)
    permit = make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id
    with svc.engine.connect() as conn:
        staff["bob"] = identity.actor_for(conn, "bob")
    staff["mallory"] = make_user(svc, "mallory")
    return staff, permit, make_delivery(tmp_path / "delivery", permit)


def test_the_workspace_stage_refuses_in_its_domain_functions(svc, world):
    staff, permit, delivery = world
    with pytest.raises(PermissionDenied, match="only a handler or the service"):
        W.create(svc, staff["bob"], permit, delivery)
    W.create(svc, staff["hanna"], permit, delivery)
    for call in (lambda a: S.start(svc, a, permit), lambda a: S.stop(svc, a, permit),
                 lambda a: S.status(svc, a, permit), lambda a: W.destroy(svc, a, permit),
                 lambda a: W.issue_token(svc, a, permit, "bob"), lambda a: W.session_audit(svc, a, permit)):
        with pytest.raises(PermissionDenied):
            call(staff["mallory"])
    for call in (lambda a: W.destroy(svc, a, permit), lambda a: W.issue_token(svc, a, permit, "alice"),
                 lambda a: W.session_audit(svc, a, permit)):
        with pytest.raises(PermissionDenied):
            call(staff["bob"])  # named, but these are the authority's (another person's token among them)
    assert W.analyst_for_token(svc, permit, W.issue_token(svc, staff["bob"], permit, "bob")) == "bob"  # his own
    assert S.status(svc, staff["bob"], permit).exists
    assert S.status(svc, identity.operator("ops"), permit).exists


def test_the_airlock_refuses_in_its_domain_functions(svc, world, tmp_path):
    staff, permit, _ = world
    with pytest.raises(PermissionDenied, match="only an analyst named on the permit"):
        A.create_request(svc, staff["mallory"], permit)
    with pytest.raises(PermissionDenied, match="only a handler or the service"):
        A.create_request(svc, staff["bob"], permit, service=True)
    rid = A.create_request(svc, staff["bob"], permit)
    table = tmp_path / "t.csv"
    table.write_text("k,n\na,50\nb,60\n")
    with pytest.raises(PermissionDenied, match="only the request's author"):
        A.add_file(svc, staff["hanna"], rid, table, {"description": "d", "method": "m"})
    A.add_file(svc, staff["bob"], rid, table, {"description": "d", "method": "m", "index": "k"})
    with pytest.raises(PermissionDenied):
        A.submit(svc, staff["oscar"], rid)
    A.submit(svc, staff["bob"], rid)
    with pytest.raises(PermissionDenied, match="only an output checker"):
        A.vote(svc, staff["hanna"], rid, "t.csv", "approve")
    with pytest.raises(PermissionDenied):
        A.view(svc, staff["mallory"], rid)
    assert A.view(svc, staff["aud"], rid)["request_id"] == rid


def test_data_requests_dp_and_imports_refuse_in_their_domain_functions(svc, world, tmp_path):
    staff, permit, delivery = world
    with pytest.raises(PermissionDenied, match="may not produce a data request's statistics: only a handler or the "
                                               "service may"):
        data_requests.produce_statistics(svc, staff["alice"], permit)
    with pytest.raises(PermissionDenied, match="may not set a permit's privacy budget: only a decider or the "
                                               "service may"):
        dp.set_budget(svc, staff["hanna"], permit, 1.0, 0.0)
    dp.set_budget(svc, staff["dora"], permit, 1.0, 0.0)
    with pytest.raises(PermissionDenied, match="only an analyst named on the permit or the service may"):
        dp.DpSession(svc, staff["mallory"], permit)
    dp.DpSession(svc, staff["bob"], permit).count([1, 0, 1], epsilon=0.1)
    assert dp.budget(svc, staff["aud"], permit).spent_epsilon == pytest.approx(0.1)
    with pytest.raises(PermissionDenied):
        dp.budget(svc, staff["mallory"], permit)
    W.create(svc, staff["hanna"], permit, delivery)
    src = tmp_path / "tool.py"
    src.write_text("x = 1\n")
    with pytest.raises(PermissionDenied, match="only an analyst named on the permit"):
        ingress.request_import(svc, staff["mallory"], permit, src, purpose="p")
    req = ingress.request_import(svc, staff["bob"], permit, src, purpose="p")
    with pytest.raises(PermissionDenied, match="only an output checker"):
        ingress.decide_import(svc, staff["hanna"], req.import_id, approve=True)
    assert ingress.list_imports(svc, staff["mallory"]) == []


def test_the_system_and_operators_act_under_their_own_names(svc, world):
    staff, permit, delivery = world
    W.create(svc, SYSTEM, permit, delivery)
    S.stop(svc, identity.operator("ops"), permit)
    from toisio import audit

    with svc.engine.connect() as conn:
        actors = {e.actor for e in audit.events(conn, subject=f"permit:{permit}") if e.action.startswith("workspace.")}
    assert actors == {"system"}  # stopping a server that is not running records nothing


@pytest.mark.parametrize("state", ["pending", "submitted", "partially_reviewed", "reviewed", "approved", "released"])
def test_the_output_request_factory_reaches_each_state(svc, state):
    from tests.factories import make_output_request

    staff = make_staff(svc)
    request_id, permit = make_output_request(svc, staff, state=state)
    assert A.request_state(svc, request_id).value == state
    # whatever its state, the requester never reviews it
    with pytest.raises(PermissionDenied):
        A.check_can_review(svc, identity.Actor("bob", frozenset({Role.OUTPUT_CHECKER})), permit, "bob")
