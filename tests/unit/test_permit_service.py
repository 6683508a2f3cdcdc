"""The permit service end to end on SQLite: the whole journey, refusals, audit, amendments, expiry, queues."""

from datetime import date, timedelta

import pytest

from permits.attachments import AttachmentMissing, store_bytes
from permits.lifecycle import IllegalTransition, State
from permits.permissions import PermissionDenied
from permits.rules import RuleViolation
from permits.service import (
    InvalidRequest,
    act,
    create_draft,
    derived_state,
    digest,
    expire_due,
    permit_access,
    queue,
    show,
    submit_form,
    tidy_drafts,
)
from tests.factories import DAY, make_case, make_form, make_staff
from toisio import audit, events


@pytest.fixture
def staff(svc):
    return make_staff(svc)


def test_whole_journey_with_audit(svc, staff):
    view = make_case(svc, staff)
    assert view.state is State.ACTIVE and view.members == ("bob",)
    assert view.decision_due == date(2026, 6, 2)
    assert view.fee["total"] == "2300.00"  # 1,300 (2023 schedule) + 1,000 controller costs
    with svc.engine.connect() as conn:
        assert derived_state(conn, view.case_id) is State.ACTIVE
        events_ = [e.action for e in audit.events(conn, subject=f"case:{view.case_id}")]
        assert audit.verify(conn, svc.audit_key).ok
    assert events_[0] == "case.created" and events_[-1] == "case.activated"
    assert "case.estimate_recorded" in events_ and "case.accepted" in events_
    access = permit_access(svc, view.case_id, today=DAY + timedelta(days=40))
    assert access.in_force and access.users == ("bob",) and access.scope.permit_id == view.case_id


def test_scope_frozen_and_hashed_at_acceptance(svc, staff):
    view = make_case(svc, staff)
    access = permit_access(svc, view.case_id, today=DAY + timedelta(days=40))
    assert view.scope_sha256 == access.scope.sha256
    assert access.scope.delivery == "pseudonymised"


def test_reading_a_case_is_audited(svc, staff):
    case = submit_form(svc, staff["alice"], make_form(), today=DAY).case_id
    v = show(svc, staff["aud"], case)
    assert v.history[0].event == "created" and v.history[1].event == "submitted"
    with svc.engine.connect() as conn:
        assert [e.actor for e in audit.events(conn, subject=f"case:{case}") if e.action == "case.viewed"] == ["aud"]
    with pytest.raises(PermissionDenied, match="only applicant, auditor"):
        show(svc, staff["oscar"], case)


def test_returned_and_resubmitted(svc, staff):
    case = submit_form(svc, staff["alice"], make_form(), today=DAY).case_id
    with pytest.raises(InvalidRequest, match="reason: Field required"):
        act(svc, staff["hanna"], case, "return", today=DAY)
    act(svc, staff["hanna"], case, "return", today=DAY, reason="attach the ethics statement")
    missing = make_form(ethics_statement_required=True, ethics_statement={"filename": "e.pdf", "sha256": "c" * 64})
    with pytest.raises(AttachmentMissing, match="e.pdf .* is not in the attachment store"):
        act(svc, staff["alice"], case, "resubmit", today=DAY, form=missing)
    ethics = store_bytes(svc, "ethics.pdf", b"statement of the ethics committee")
    form = make_form(ethics_statement_required=True, ethics_statement=ethics.model_dump())
    v = act(svc, staff["alice"], case, "resubmit", today=DAY, form=form)
    assert v.state is State.SUBMITTED


def test_nobody_handles_or_decides_their_own_application(svc, staff):
    own = make_form(applicant={"name": "Hanna", "email": "hanna@authority.example", "user_id": "hanna"})
    case = submit_form(svc, staff["hanna"], own, today=DAY).case_id
    with pytest.raises(PermissionDenied, match="cannot confirm") as exc:
        act(svc, staff["hanna"], case, "confirm_complete", today=DAY)
    assert exc.value.code == "conflict_of_interest"
    act(svc, staff["harri"], case, "confirm_complete", today=DAY)
    member_case = submit_form(svc, staff["alice"], make_form(processors=[
        {"name": "Dora", "user_id": "dora", "organisation": "X", "confidentiality_undertaking_signed": "2026-01-01"}]),
        today=DAY).case_id
    for step in ("confirm_complete", "request_estimates"):
        act(svc, staff["hanna"], member_case, step, today=DAY)
    for reg in ("hilmo", "population"):
        act(svc, staff["thl1"], member_case, "record_estimate", today=DAY, registry=reg, cost_eur=1, working_days=1)
    act(svc, staff["hanna"], member_case, "send_estimate", today=DAY)
    act(svc, staff["alice"], member_case, "accept", today=DAY)
    act(svc, staff["hanna"], member_case, "present", today=DAY)
    with pytest.raises(PermissionDenied) as exc:
        act(svc, staff["dora"], member_case, "approve", today=DAY, valid_until=date(2028, 1, 1))
    assert exc.value.code == "conflict_of_interest"


def test_rules_refused_through_the_service(svc, staff):
    with pytest.raises(RuleViolation, match="development and innovation"):
        submit_form(svc, staff["alice"], make_form(purpose="development_and_innovation"), today=DAY)
    with pytest.raises(PermissionDenied, match="in their own name"):
        submit_form(svc, staff["hanna"], make_form(), today=DAY)


def test_controller_only_for_own_registry(svc, staff):
    case = submit_form(svc, staff["alice"], make_form(), today=DAY).case_id
    act(svc, staff["hanna"], case, "confirm_complete", today=DAY)
    act(svc, staff["hanna"], case, "request_estimates", today=DAY)
    with pytest.raises(PermissionDenied, match="controller of kela_purchases, not of hilmo"):
        act(svc, staff["kela1"], case, "record_estimate", today=DAY, registry="hilmo", cost_eur=1, working_days=1)


def test_illegal_transition_and_withdrawal(svc, staff):
    case = submit_form(svc, staff["alice"], make_form(), today=DAY).case_id
    with pytest.raises(PermissionDenied, match="'approve' is not possible when the case is 'submitted'"):
        act(svc, staff["dora"], case, "approve", today=DAY, valid_until=date(2028, 1, 1))
    assert act(svc, staff["alice"], case, "withdraw", today=DAY).state is State.WITHDRAWN
    with pytest.raises(PermissionDenied):
        act(svc, staff["alice"], case, "resubmit", today=DAY)


def test_deadline_extension_once_with_reason(svc, staff):
    case = submit_form(svc, staff["alice"], make_form(), today=DAY).case_id
    act(svc, staff["hanna"], case, "confirm_complete", today=DAY)
    v = act(svc, staff["hanna"], case, "extend_deadline", today=DAY, months=3, reason="exceptionally broad")
    assert v.decision_due == date(2026, 9, 2)
    with pytest.raises(InvalidRequest, match="already extended"):
        act(svc, staff["hanna"], case, "extend_deadline", today=DAY, months=1, reason="again")


def test_amendment_adds_and_removes_users_and_extends(svc, staff):
    permit = make_case(svc, staff).case_id
    received = []

    def on_amended(topic, payload):
        received.append(payload)

    events.subscribe("permit.amended", on_amended)
    try:
        amendment = make_form(kind="amendment", purpose=None, research_plan=None, extraction=None,
                              requested_validity=None, permit_id=permit, title="More time, new analyst",
                              processors=[], change={"new_valid_until": "2029-06-30", "remove_users": ["bob"],
                                                     "add_users": [{"name": "Carl", "user_id": "carl",
                                                                    "organisation": "Example University",
                                                                    "confidentiality_undertaking_signed":
                                                                        "2026-05-01"}]})
        case = submit_form(svc, staff["alice"], amendment, today=DAY + timedelta(days=60)).case_id
        act(svc, staff["hanna"], case, "confirm_complete", today=DAY + timedelta(days=60))
        act(svc, staff["hanna"], case, "present", today=DAY + timedelta(days=61))
        v = act(svc, staff["dora"], case, "approve", today=DAY + timedelta(days=62), valid_until=date(2029, 6, 30))
    finally:
        events.unsubscribe("permit.amended", on_amended)
    assert v.fee["total"] == "350.00"
    access = permit_access(svc, permit, today=DAY + timedelta(days=63))
    assert access.users == ("carl",) and access.valid_until == date(2029, 6, 30)
    assert received and received[0]["removed_users"] == ["bob"]


def test_amendment_of_data_refused(svc, staff):
    permit = make_case(svc, staff).case_id
    with pytest.raises(RuleViolation, match="needs a new permit application"):
        submit_form(svc, staff["alice"], make_form(kind="amendment", permit_id=permit,
                                                   change={"new_valid_until": "2030-01-01"}), today=DAY)


def test_expiry_ends_access_without_anyone_acting(svc, staff):
    permit = make_case(svc, staff).case_id
    after = date(2029, 1, 1)
    assert not permit_access(svc, permit, today=after).in_force  # even before the job runs
    told = []

    def on_expired(topic, payload):
        told.append(payload["permit_id"])

    events.subscribe("permit.expired", on_expired)
    try:
        assert expire_due(svc, today=after) == [permit]
    finally:
        events.unsubscribe("permit.expired", on_expired)
    assert told == [permit]
    assert permit_access(svc, permit, today=after).state is State.EXPIRED


def test_queue_and_digest(svc, staff):
    a = submit_form(svc, staff["alice"], make_form(), today=DAY).case_id
    b = submit_form(svc, staff["alice"], make_form(title="Second"), today=DAY).case_id
    act(svc, staff["hanna"], a, "confirm_complete", today=DAY)
    act(svc, staff["harri"], b, "confirm_complete", today=DAY + timedelta(days=10))
    mine = queue(svc, staff["hanna"], today=DAY)
    assert [i.case_id for i in mine] == [a] and mine[0].deadline == date(2026, 6, 2)
    everything = queue(svc, staff["hanna"], all_handlers=True, today=DAY)
    assert [i.case_id for i in everything] == [a, b]
    assert [i.case_id for i in queue(svc, staff["dora"], all_handlers=True, today=DAY)] == [a, b]
    for outsider in ("alice", "kela1", "oscar", "aud"):  # issue 12, finding 9
        with pytest.raises(PermissionDenied, match="only decider, handler may see every handler's queue"):
            queue(svc, staff[outsider], all_handlers=True, today=DAY)
        assert queue(svc, staff[outsider], today=DAY) == []
    late = digest(svc, today=date(2026, 6, 5))
    assert {i.case_id: i.status for i in late} == {a: "overdue", b: "near"}


def test_drafts_reminded_then_deleted(svc, staff):
    case = create_draft(svc, staff["alice"], make_form(), today=DAY)
    assert tidy_drafts(svc, today=DAY + timedelta(days=31)) == {"reminded": [case], "deleted": []}
    assert tidy_drafts(svc, today=DAY + timedelta(days=40)) == {"reminded": [], "deleted": []}
    assert tidy_drafts(svc, today=DAY + timedelta(days=62)) == {"reminded": [], "deleted": [case]}
    with svc.engine.connect() as conn:
        assert derived_state(conn, case) is State.DELETED
        assert any(e.action == "case.deleted" for e in audit.events(conn, subject=f"case:{case}"))


def test_illegal_transition_message_lists_possible_events():
    with pytest.raises(IllegalTransition, match="possible: .*completeness_confirmed"):
        from permits.lifecycle import Event, next_state

        next_state(State.SUBMITTED, Event.APPROVED)
