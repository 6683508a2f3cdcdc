"""State that decides permissions cannot change behind the audit log (issue 12, finding 6)."""

from datetime import date, timedelta

import pytest
from typer.testing import CliRunner

from permits.content import case_file
from permits.service import CaseTampered, frozen_scope, permit_access, show, submit_form, verify_cases
from tests.factories import audit_triggers_lifted, make_case, make_form
from toisio import audit
from toisio.app.cli import app


@pytest.fixture
def staff(svc):
    from tests.factories import make_staff

    return make_staff(svc)


#: the reads of a case that serve a verified copy between changes: the API's and the portal's case page
READERS = {"show": show, "case_page": case_file}


def _sql(svc, *statements):
    """What someone with write access to the database file does."""
    with svc.engine.begin() as conn:
        for s in statements:
            conn.exec_driver_sql(s)


def _verify_cli(svc, monkeypatch):
    monkeypatch.setenv("TOISIO_HOME", str(svc.settings.home))
    if svc.engine.dialect.name != "sqlite":
        monkeypatch.setenv("TOISIO_DATABASE_URL", svc.settings.db_url)
    return CliRunner().invoke(app, ["audit", "verify"])


@pytest.mark.parametrize("attack", [
    "UPDATE permit_case SET state='active', valid_until='2099-01-01' WHERE case_id='{other}'",
    "INSERT INTO case_member (case_id, user_id, name, active) VALUES ('{permit}', 'mallory', 'Mallory', true)",
    "UPDATE case_member SET active=false WHERE case_id='{permit}'",
    "UPDATE permit_case SET valid_until='2099-12-31' WHERE case_id='{permit}'",
    "UPDATE permit_case SET applicant_id='harri' WHERE case_id='{permit}'",
    "UPDATE case_event SET actor='mallory' WHERE case_id='{permit}' AND seq=2",
])
def test_an_edit_of_a_state_table_is_detected_and_refused_at_use(svc, staff, attack, monkeypatch):
    permit = make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id
    other = submit_form(svc, staff["alice"], make_form(title="second")).case_id
    assert permit_access(svc, permit).in_force and verify_cases(svc) == []
    assert _verify_cli(svc, monkeypatch).exit_code == 0
    target = other if "{other}" in attack else permit
    _sql(svc, attack.format(permit=permit, other=other))
    with pytest.raises(CaseTampered, match="audit log"):
        permit_access(svc, target)
    with pytest.raises(CaseTampered):
        show(svc, staff["hanna"], target)
    assert [c for c, _ in verify_cases(svc)] == [target]
    r = _verify_cli(svc, monkeypatch)
    assert r.exit_code == 1 and target in r.output and "behind" in " ".join(r.output.split())


def test_a_tampered_scope_is_refused(svc, staff):
    permit = make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id
    frozen_scope(svc, permit)
    _sql(svc, f"UPDATE permit_case SET scope=replace(scope, 'hilmo', 'hilmo2') WHERE case_id='{permit}'")
    with pytest.raises(CaseTampered):
        frozen_scope(svc, permit)


def test_a_forged_audit_entry_cannot_vouch_for_an_edit(svc, staff):
    """Writing the matching digest into the newest audit entry does not help without the audit key."""
    permit = make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id
    _sql(svc, f"UPDATE permit_case SET valid_until='2099-12-31' WHERE case_id='{permit}'")
    from permits.service import case_digest

    with svc.engine.connect() as conn:
        forged = case_digest(conn, permit)
        last = [e for e in audit.events(conn, subject=f"case:{permit}") if "case_digest" in e.payload][-1]
    payload = audit.canonical_json({**last.payload, "case_digest": forged})
    with audit_triggers_lifted(svc) as conn:
        conn.exec_driver_sql(f"UPDATE audit_event SET payload='{payload}' WHERE seq={last.seq}")
    with pytest.raises(CaseTampered, match="altered"):
        permit_access(svc, permit)


def test_a_truncated_log_refuses_every_permit_decision(svc, staff):
    permit = make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id
    with audit_triggers_lifted(svc) as conn:
        n = audit.head(conn)[0]
        conn.exec_driver_sql(f"DELETE FROM audit_event WHERE seq={n}")
    with pytest.raises(CaseTampered, match="truncated") as exc:
        permit_access(svc, permit)
    assert exc.value.code == "audit_truncated"


# ---------------------------------------------------------------- reads served from what a process verified


@pytest.mark.parametrize("attack", [
    "UPDATE permit_case SET valid_until='2099-12-31' WHERE case_id='{permit}'",
    "INSERT INTO case_member (case_id, user_id, name, active) VALUES ('{permit}', 'mallory', 'Mallory', true)",
    "UPDATE case_event SET actor='mallory' WHERE case_id='{permit}' AND seq=2",
    "DELETE FROM case_event WHERE case_id='{permit}' AND seq=3",
])
@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_an_edit_after_a_read_is_refused_at_the_next_read(svc, staff, attack, read):
    """A process keeps the case it verified for later reads; an edit of its rows by anyone (counted by database
    triggers) makes the next read verify afresh, and refuse."""
    permit = make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id
    first = read(svc, staff["hanna"], permit)
    assert read(svc, staff["hanna"], permit) == first  # served from what was verified
    _sql(svc, attack.format(permit=permit))
    with pytest.raises(CaseTampered):
        read(svc, staff["hanna"], permit)


def test_a_change_made_by_another_process_is_seen_at_the_next_read(svc, staff):
    from permits.service import act
    from toisio.service import Service

    case = make_case(svc, staff, state="submitted").case_id
    before = show(svc, staff["hanna"], case)
    other = Service(svc.settings)  # another server process: its own cache and connections
    act(other, staff["hanna"], case, "remark", text="please add the ethics statement", public=True)
    after = show(svc, staff["hanna"], case)
    assert len(after.history) == len(before.history) + 1
    assert after.history[-1].payload["text"] == "please add the ethics statement"


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_every_read_is_on_the_chain_before_it_returns(svc, staff, read):
    case = make_case(svc, staff, state="submitted").case_id
    for _ in range(3):
        read(svc, staff["hanna"], case)
    with svc.engine.connect() as conn:
        viewed = [e for e in audit.events(conn, subject=f"case:{case}") if e.action == "case.viewed"]
        assert len(viewed) == 3 and audit.verify(conn, svc.audit_key).ok


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_a_read_notices_a_truncated_log_even_when_the_case_is_unchanged(svc, staff, read):
    case = make_case(svc, staff, state="submitted").case_id
    read(svc, staff["hanna"], case)
    with audit_triggers_lifted(svc) as conn:
        conn.exec_driver_sql(f"DELETE FROM audit_event WHERE seq={audit.head(conn)[0]}")
    with pytest.raises(audit.AuditError, match="truncated"):
        read(svc, staff["hanna"], case)


def test_an_edited_vouching_mark_is_reported_by_verify(svc, staff):
    make_case(svc, staff, state="submitted")
    with audit_triggers_lifted(svc) as conn:
        seq = conn.exec_driver_sql("SELECT max(seq) FROM audit_event WHERE vouches = 'case_digest'").scalar()
        conn.exec_driver_sql(f"UPDATE audit_event SET vouches = NULL WHERE seq = {seq}")
    with svc.engine.connect() as conn:
        result = audit.verify(conn, svc.audit_key)
    assert not result.ok and result.first_bad_seq == seq and "vouching mark" in result.reason
