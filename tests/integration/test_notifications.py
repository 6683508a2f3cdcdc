"""Notifications: each event tells whoever it waits for, by e-mail through a local SMTP server (aiosmtpd) and
in the portal's inbox, in the recipient's language; a re-run sends nothing twice."""

from __future__ import annotations

import socket
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller

from flows.notifications import queue_new, run_notifier
from permits.service import act
from secure_env.airlock import outputs as A
from tests.factories import make_case, make_output_request, make_service, make_staff, make_user, who
from toisio import notify
from toisio.identity import set_language

pytestmark = pytest.mark.integration


class _Sink:
    def __init__(self):
        self.mails = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.mails.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = _Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def _to(sink, address):
    return [m for m in sink.mails if m["To"] == address]


def test_each_waiting_person_is_emailed_once_in_their_language(tmp_path, smtp):
    sink, port = smtp
    svc = make_service(tmp_path / "home", smtp_host="127.0.0.1", smtp_port=port, smtp_from="toisio@findata.example",
                       public_url="https://toisio.example")
    staff = make_staff(svc)
    set_language(svc, staff["alice"], "sv")
    set_language(svc, staff["thl1"], "en")
    case = make_case(svc, staff, state="submitted").case_id
    run_notifier(svc)
    assert len(_to(sink, "hanna@authority.example")) == 1  # the handlers hear of the new application
    mail = _to(sink, "hanna@authority.example")[0]
    assert case in mail["Subject"] and f"https://toisio.example/cases/{case}" in mail.get_content()

    act(svc, staff["hanna"], case, "return", reason="the research plan lacks a timetable")
    act(svc, staff["alice"], case, "resubmit")
    act(svc, staff["hanna"], case, "confirm_complete")
    act(svc, staff["hanna"], case, "request_estimates")
    report = run_notifier(svc)
    assert report.failed == 0 and report.sent >= 3
    returned = [m for m in _to(sink, "alice@uni.example") if case in m["Subject"]]
    assert len(returned) == 1
    assert "returnerades" in returned[0]["Subject"] and "timetable" in returned[0].get_content()  # Swedish
    assert returned[0]["Content-Language"] == "sv"
    # the controllers of the registries asked for (THL: hilmo and population); not Kela's
    assert [m["Subject"] for m in _to(sink, "thl1@authority.example")] == [f"Your estimate is asked for {case}"]
    assert _to(sink, "kela1@authority.example") == []
    # the one who acted is not told of their own act
    assert not any("resubmitted" in m["Subject"] for m in _to(sink, "alice@uni.example"))

    # nothing twice: a second run, and the same entries handled again after a crash lost the cursor
    before = len(sink.mails)
    assert run_notifier(svc).sent == 0
    with svc.engine.begin() as conn:
        notify.set_cursor(conn, "notifier", 0)
    entries, queued, _forged = queue_new(svc)
    assert entries > 0 and queued == 0
    run_notifier(svc)
    assert len(sink.mails) == before

    # the inbox holds the same messages, in the recipient's language
    inbox = notify.inbox(svc, staff["alice"])
    assert inbox and inbox[0].subject == f"case:{case}" and not inbox[0].read
    assert notify.mark_read(svc, staff["alice"]) == len(inbox)


def test_inbox_only_users_get_no_email_and_no_smtp_server_keeps_everything_in_the_inbox(tmp_path, smtp):
    sink, port = smtp
    svc = make_service(tmp_path / "home", smtp_host="127.0.0.1", smtp_port=port)
    staff = make_staff(svc)
    notify.set_channel(svc, staff["hanna"], "inbox")
    with pytest.raises(notify.Invalid, match="unknown channel"):
        notify.set_channel(svc, staff["hanna"], "pigeon")
    make_case(svc, staff, state="submitted")
    run_notifier(svc)
    assert _to(sink, "hanna@authority.example") == [] and len(_to(sink, "harri@authority.example")) == 1
    assert [n.email_status for n in notify.inbox(svc, staff["hanna"])] == ["inbox_only"]

    quiet = make_service(tmp_path / "quiet")
    staff = make_staff(quiet)
    make_case(quiet, staff, state="submitted")
    assert run_notifier(quiet).sent == 0
    assert [n.email_status for n in notify.inbox(quiet, staff["hanna"])] == ["no_smtp"]


def test_output_checkers_are_told_of_a_request_and_the_analyst_of_the_decision(tmp_path, smtp):
    sink, port = smtp
    svc = make_service(tmp_path / "home", smtp_host="127.0.0.1", smtp_port=port)
    staff = make_staff(svc)
    make_user(svc, "bob", email="bob@uni.example")  # the analyst named on the permit
    rid, _permit = make_output_request(svc, staff, state="submitted")
    for u in ("oscar", "olga", "bob", "alice"):
        set_language(svc, who(svc, u), "en")
    run_notifier(svc)
    for checker in ("oscar@authority.example", "olga@x.example"):
        assert [m["Subject"] for m in _to(sink, checker)] == [f"Output request {rid} waits for review"]
    # bob, named on the permit, was told of its decision and its workspace, not of his own request
    assert [m["Subject"] for m in _to(sink, "bob@uni.example")] == [
        f"Decision on {_permit}: approved", f"The workspace of {_permit} is open"]
    sink.mails.clear()
    for c in ("oscar", "olga"):
        A.vote(svc, who(svc, c), rid, "table.csv", "approve")
        A.submit_review(svc, who(svc, c), rid)
    A.decide(svc, who(svc, "olga"), rid, "approve")
    A.release(svc, who(svc, "oscar"), rid)
    run_notifier(svc)
    assert [m["Subject"] for m in _to(sink, "bob@uni.example")] == [
        f"Your output request {rid} was approved", f"Outputs of {rid} were released"]
    assert f"Outputs of {rid} were released" in [m["Subject"] for m in _to(sink, "alice@uni.example")]


def test_a_forged_audit_entry_notifies_nobody(tmp_path, smtp):
    sink, port = smtp
    svc = make_service(tmp_path / "home", smtp_host="127.0.0.1", smtp_port=port)
    staff = make_staff(svc)
    case = make_case(svc, staff, state="submitted").case_id
    run_notifier(svc)
    from sqlalchemy import text

    with svc.engine.begin() as conn:
        seq = conn.execute(text("SELECT max(seq) FROM audit_event")).scalar() + 1
        conn.execute(text("INSERT INTO audit_event (seq, ts, actor, action, subject, payload, prev_hash, entry_hash) "
                          "VALUES (:s, '2026-12-02T00:00:00Z', 'mallory', 'case.returned', :c, '{}', 'x', 'y')"),
                     {"s": seq, "c": f"case:{case}"})
    before = len(sink.mails)
    assert run_notifier(svc).skipped_forged == 1
    assert len(sink.mails) == before


def test_the_inbox_and_the_channel_through_the_api_and_the_portal(tmp_path):
    import httpx

    from tests.factories import PortalUser, csrf_of, make_token, portal_login, serve_in_thread
    from toisio.app.api import create_app

    svc = make_service(tmp_path / "home")
    staff = make_staff(svc)
    case = make_case(svc, staff, state="submitted").case_id
    act(svc, staff["hanna"], case, "return", reason="more detail please")
    run_notifier(svc)
    token = make_token(svc, "alice")
    nina = PortalUser(svc, "nina", ("handler",))
    with serve_in_thread(create_app(svc)) as root, \
            httpx.Client(base_url=root, headers={"Authorization": f"Bearer {token}"}) as api, \
            httpx.Client(base_url=root, headers={"Accept-Language": "en"}) as web:
        got = api.get("/api/v1/notifications").json()
        assert [n["subject"] for n in got] == [f"case:{case}"] and got[0]["read"] is False
        assert api.put("/api/v1/me/notifications", json={"channel": "pigeon"}).status_code == 422
        assert api.put("/api/v1/me/notifications", json={"channel": "inbox"}).json() == {"channel": "inbox"}
        assert notify.channel_of(svc, staff["alice"]) == "inbox"
        assert api.post("/api/v1/notifications/read").json() == {"marked": 1}
        portal_login(web, nina)
        act(svc, staff["alice"], case, "resubmit")
        run_notifier(svc)
        page = web.get("/notifications").text
        assert f"Application {case} was resubmitted" not in page  # nina: Finnish by default
        assert f"Hakemus {case} lähetettiin uudelleen" in page
        r = web.post("/notifications/channel", data={"channel": "inbox", "csrf_token": csrf_of(page)})
        assert r.status_code == 303 and notify.channel_of(svc, who(svc, "nina")) == "inbox"


def test_an_internal_remark_tells_nobody_outside_the_authority(tmp_path, smtp):
    sink, port = smtp
    svc = make_service(tmp_path / "home", smtp_host="127.0.0.1", smtp_port=port)
    staff = make_staff(svc)
    case = make_case(svc, staff, state="submitted").case_id
    run_notifier(svc)
    sink.mails.clear()
    act(svc, staff["hanna"], case, "remark", text="the plan looks thin; ask THL", public=False)
    act(svc, staff["hanna"], case, "remark", text="please add a timetable", public=True)
    act(svc, staff["alice"], case, "remark", text="timetable added", public=True)
    run_notifier(svc)
    to_alice = [m.get_content() for m in _to(sink, "alice@uni.example")]
    assert len(to_alice) == 1 and "please add a timetable" in to_alice[0]
    assert not any("looks thin" in m.get_content() for m in sink.mails)
    assert any("timetable added" in m.get_content() for m in _to(sink, "hanna@authority.example"))


def test_data_stewards_are_told_of_an_import_request_and_the_analyst_of_its_decision(tmp_path, smtp):
    from secure_env.workspace import ingress

    sink, port = smtp
    svc = make_service(tmp_path / "home", smtp_host="127.0.0.1", smtp_port=port)
    staff = make_staff(svc)
    make_user(svc, "bob", email="bob@uni.example")
    make_user(svc, "olga", ("output_checker",), email="olga@x.example")
    permit = make_case(svc, staff).case_id
    for u in ("oscar", "olga", "bob"):
        set_language(svc, who(svc, u), "en" if u != "olga" else "sv")
    run_notifier(svc)
    sink.mails.clear()
    code = tmp_path / "icd10_groups.csv"
    code.write_text("code,group\nE11,diabetes\n")
    req = ingress.request_import(svc, who(svc, "bob"), permit, code, purpose="ICD-10 grouping for the models")
    run_notifier(svc)
    assert [m["Subject"] for m in _to(sink, "oscar@authority.example")] == [
        f"Import request {req.import_id} waits for a decision"]
    assert len(_to(sink, "olga@x.example")) == 1 and req.import_id in _to(sink, "olga@x.example")[0]["Subject"]
    assert _to(sink, "olga@x.example")[0]["Subject"] != f"Import request {req.import_id} waits for a decision"
    assert _to(sink, "bob@uni.example") == []  # not told of his own request
    sink.mails.clear()
    ingress.decide_import(svc, who(svc, "oscar"), req.import_id, approve=False, reason="use the published table")
    run_notifier(svc)
    assert [m["Subject"] for m in _to(sink, "bob@uni.example")] == [
        f"Your import request {req.import_id} was rejected"]
    assert _to(sink, "oscar@authority.example") == []
