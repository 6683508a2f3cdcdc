"""The hash-chained, append-only audit log: appends, verification and every kind of tampering."""

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from toisio import audit


def _fill(svc, n=5):
    for i in range(n):
        svc.record(actor=f"user{i}", action="case.viewed", subject="permit:TOISIO-2026-1", payload={"i": i})


def _verify(svc):
    with svc.engine.connect() as conn:
        return audit.verify(conn, svc.audit_key)


def _raw(svc, *statements):
    """Run SQL with the append-only triggers dropped, as an attacker with database access would."""
    with svc.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_event DISABLE TRIGGER USER")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_delete")
        for s in statements:
            conn.exec_driver_sql(s)


def test_chain_verifies(svc):
    _fill(svc)
    r = _verify(svc)
    assert r.ok and r.checked == 5
    with svc.engine.connect() as conn:
        seq, h = audit.head(conn)
    assert seq == 5 and len(h) == 64


def test_update_and_delete_refused_by_database(svc):
    _fill(svc, 2)
    with pytest.raises(DatabaseError, match="append-only"), svc.engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET actor='mallory' WHERE seq=1"))
    with pytest.raises(DatabaseError, match="append-only"), svc.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq=2"))
    assert _verify(svc).ok


def test_edit_detected(svc):
    _fill(svc)
    _raw(svc, "UPDATE audit_event SET payload='{\"i\":99}' WHERE seq=3")
    r = _verify(svc)
    assert not r.ok and r.first_bad_seq == 3 and "altered" in r.reason


def test_deletion_detected(svc):
    _fill(svc)
    _raw(svc, "DELETE FROM audit_event WHERE seq=2")
    r = _verify(svc)
    assert not r.ok and r.first_bad_seq == 2 and "missing" in r.reason


def test_insertion_detected(svc):
    _fill(svc)
    # Shift entries 3..5 up by one and insert a forged entry 3 with a made-up hash.
    _raw(svc, "UPDATE audit_event SET seq=seq+100 WHERE seq>=3",
         "UPDATE audit_event SET seq=seq-99 WHERE seq>=100",
         "INSERT INTO audit_event VALUES (3,'2026-01-01T00:00:00.000000Z','mallory','case.viewed',"
         "'permit:x','{}','" + "f" * 64 + "','" + "e" * 64 + "')")
    r = _verify(svc)
    assert not r.ok and r.first_bad_seq == 3


def test_reordering_detected(svc):
    _fill(svc)
    _raw(svc, "UPDATE audit_event SET seq=100 WHERE seq=2", "UPDATE audit_event SET seq=2 WHERE seq=4",
         "UPDATE audit_event SET seq=4 WHERE seq=100")
    r = _verify(svc)
    assert not r.ok and r.first_bad_seq == 2


def test_truncated_tail_detected_with_anchor(svc):
    _fill(svc)
    with svc.engine.connect() as conn:
        anchor = audit.head(conn)
    _raw(svc, "DELETE FROM audit_event WHERE seq=5")
    assert _verify(svc).ok  # without an anchor a clean truncation looks intact...
    with svc.engine.connect() as conn:
        r = audit.verify(conn, svc.audit_key, anchor=anchor)
    assert not r.ok and r.first_bad_seq == 5  # ...which is why the head is anchored outside


def test_wrong_key_fails_verification(svc, tmp_path):
    from toisio.keystore import Secret

    _fill(svc, 2)
    with svc.engine.connect() as conn:
        r = audit.verify(conn, Secret("audit", b"\x00" * 32))
    assert not r.ok and r.first_bad_seq == 1


def test_concurrent_appends_keep_the_chain(svc):
    _fill(svc, 1)
    errors = []

    def worker(k):
        try:
            for i in range(15):
                svc.record(actor=f"t{k}", action="x.y", subject="s", payload={"i": i})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    r = _verify(svc)
    assert r.ok and r.checked == 61


def test_append_needs_actor_action_subject(svc):
    with pytest.raises(audit.AuditError), svc.engine.begin() as conn:
        audit.append(conn, svc.audit_key, actor="", action="a", subject="s")
