"""The hash-chained, append-only audit log: appends, verification and every kind of tampering."""

import threading
import time

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError

from tests.factories import audit_triggers_lifted
from toisio import audit


def _fill(svc, n=5):
    for i in range(n):
        svc.record(actor=f"user{i}", action="case.viewed", subject="permit:TOISIO-2026-1", payload={"i": i})


def _verify(svc):
    with svc.engine.connect() as conn:
        return audit.verify(conn, svc.audit_key)


def _raw(svc, *statements):
    """Run SQL with the append-only triggers lifted, as an attacker with database access would."""
    with audit_triggers_lifted(svc) as conn:
        for s in statements:
            conn.exec_driver_sql(s)


def _in_threads(work, n: int) -> list[Exception]:
    """Run ``work(i)`` for i in 0..n-1, each in a thread of its own, all at once; the errors they raised."""
    errors: list[Exception] = []

    def run(i):
        try:
            work(i)
        except Exception as exc:  # pragma: no cover - returned to the test, which asserts there are none
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


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
         "INSERT INTO audit_event (seq, ts, actor, action, subject, payload, prev_hash, entry_hash) "
         "VALUES (3,'2026-01-01T00:00:00.000000Z','mallory','case.viewed',"
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
    audit.head_path(svc.audit_key).unlink()  # even with the head file gone, an external anchor catches it
    _raw(svc, "DELETE FROM audit_event WHERE seq=5")
    assert _verify(svc).ok  # with neither head file nor anchor a clean truncation looks intact...
    with svc.engine.connect() as conn:
        r = audit.verify(conn, svc.audit_key, anchor=anchor)
    assert not r.ok and r.first_bad_seq == 5  # ...which is why the head is also anchored outside


# -------------------------------------------------- truncation and rollback without an anchor (issue 12, finding 7)

def test_the_head_is_kept_outside_the_database_after_each_commit(svc):
    _fill(svc, 3)
    with svc.engine.connect() as conn:
        assert audit.read_head_file(svc.audit_key) == audit.head(conn)
    assert (audit.head_path(svc.audit_key).stat().st_mode & 0o077) == 0
    with pytest.raises(RuntimeError), svc.engine.begin() as conn:  # a rolled-back append moves no head
        audit.append(conn, svc.audit_key, actor="a", action="case.viewed", subject="s")
        raise RuntimeError("rolled back")
    assert audit.read_head_file(svc.audit_key)[0] == 3 and _verify(svc).ok


@pytest.mark.parametrize("attack", ["last_rows", "all_rows"])
def test_truncation_is_detected_without_an_anchor(svc, attack):
    _fill(svc)
    _raw(svc, "DELETE FROM audit_event WHERE seq>=4" if attack == "last_rows" else "DELETE FROM audit_event")
    r = _verify(svc)
    assert not r.ok and "truncated" in r.reason
    with svc.engine.connect() as conn, pytest.raises(audit.AuditError, match="truncated"):
        audit.check_head(conn, svc.audit_key)


def test_restoring_an_older_copy_of_the_database_is_detected(svc, tmp_path):
    if svc.engine.dialect.name != "sqlite":
        pytest.skip("a file copy is the SQLite form of this attack; truncation covers PostgreSQL")
    import shutil

    _fill(svc, 2)
    db = svc.settings.home / "toisio.db"
    svc.engine.dispose()
    shutil.copy(db, tmp_path / "old.db")
    _fill(svc, 3)
    svc.engine.dispose()
    shutil.copy(tmp_path / "old.db", db)
    for suffix in ("-wal", "-shm"):
        (db.parent / (db.name + suffix)).unlink(missing_ok=True)
    r = _verify(svc)
    assert not r.ok and "older copy" in r.reason


def test_a_dropped_table_is_reported_not_a_traceback(svc):
    from typer.testing import CliRunner

    from toisio.app.cli import app

    _fill(svc, 2)
    with svc.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE audit_event")
    r = _verify(svc)
    assert not r.ok and "missing" in r.reason
    if svc.engine.dialect.name == "sqlite":
        import os

        os.environ["TOISIO_HOME"] = str(svc.settings.home)
        try:
            out = CliRunner().invoke(app, ["audit", "verify"])
        finally:
            del os.environ["TOISIO_HOME"]
        assert out.exit_code == 1 and "missing" in out.output and "Traceback" not in out.output


def test_wrong_key_fails_verification(svc, tmp_path):
    from toisio.keystore import Secret

    _fill(svc, 2)
    with svc.engine.connect() as conn:
        r = audit.verify(conn, Secret("audit", b"\x00" * 32))
    assert not r.ok and r.first_bad_seq == 1


def test_concurrent_appends_keep_the_chain(svc):
    _fill(svc, 1)

    def worker(k):
        for i in range(15):
            svc.record(actor=f"t{k}", action="case.viewed", subject="s", payload={"i": i})

    assert not _in_threads(worker, 4)
    r = _verify(svc)
    assert r.ok and r.checked == 61


def test_append_needs_actor_action_subject(svc):
    with pytest.raises(audit.AuditError), svc.engine.begin() as conn:
        audit.append(conn, svc.audit_key, actor="", action="a", subject="s")


def test_a_reader_whose_snapshot_predates_a_commit_is_not_told_the_log_was_truncated(svc):
    """Under load a reader saw the head file of a commit newer than its own snapshot and refused a valid token
    as tampered (found by the permits benchmark: 87 of 799 reads).  The reader now looks again once the append
    lock is free; a real truncation is still refused."""
    from toisio.db import read_connection

    svc.record(actor="a", action="case.viewed", subject="s")
    with read_connection(svc.engine) as reader:
        reader.execute(select(audit.AuditEventRow.seq)).all()  # the snapshot starts here
        svc.record(actor="b", action="case.viewed", subject="s")  # commits and writes the head file
        audit.check_head(reader, svc.audit_key)  # no false alarm
    _raw(svc, "DELETE FROM audit_event WHERE seq=2")
    with read_connection(svc.engine) as reader, pytest.raises(audit.AuditError, match="no longer holds"):
        audit.check_head(reader, svc.audit_key)


# ---------------------------------------------------------------- reads recorded by group commit


def test_concurrent_reads_are_recorded_together_and_each_waits_for_its_commit(svc, monkeypatch):
    commits = []
    real = audit._append_all

    def counting(conn, key, items, **kw):
        commits.append(len(items))
        return real(conn, key, items, **kw)

    monkeypatch.setattr(audit, "_append_all", counting)
    recorder = audit.ReadRecorder(svc.engine, svc.audit_key)
    got = []

    def reader(i):
        got.append(recorder.record(actor=f"u{i}", action="case.viewed", subject=f"case:{i}", payload={"i": i}))

    assert not _in_threads(reader, 40)
    assert len(got) == 40 and sum(commits) == 40
    assert len(commits) < 40  # several readers' events shared a commit
    with svc.engine.connect() as conn:
        stored = {e.seq: e for e in audit.events(conn)}
        assert audit.verify(conn, svc.audit_key).ok
    assert all(stored[e.seq] == e for e in got)  # each reader got back its own committed entry
    assert sorted(e.payload["i"] for e in got) == list(range(40))
    with svc.engine.connect() as conn:  # batches write the head after their commit, never an older over a newer
        assert audit.read_head_file(svc.audit_key) == audit.head(conn)


def test_readers_take_the_lead_in_turn_and_each_waits_once(svc, monkeypatch):
    """With batches smaller than the crowd, the lead passes from batch to batch until every reader has its event;
    a reader that waits is woken once (by its own event), not at every batch."""
    waits = []

    class Counting(threading.Event):
        def wait(self, timeout=None):
            waits.append(1)
            return super().wait(timeout)

    monkeypatch.setattr(audit._Waiting, "__init__", _waiting_with(Counting))
    recorder = audit.ReadRecorder(svc.engine, svc.audit_key, max_batch=3)
    got = []
    threads = [threading.Thread(target=lambda i=i: got.append(recorder.record(actor=f"u{i}", action="case.viewed",
                                                                               subject=f"case:{i}")), daemon=True)
               for i in range(30)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a reader was left waiting: the lead was not handed over"
    assert len({e.seq for e in got}) == 30 and sorted(e.subject for e in got) == sorted(f"case:{i}" for i in range(30))
    assert len(waits) <= 30 - 1  # at most one wait per reader, and the first reader leads without waiting
    assert _verify(svc).ok and audit.read_head_file(svc.audit_key)[0] == max(e.seq for e in got)


def _waiting_with(event_type):
    original = audit._Waiting.__init__

    def init(self, item, *a, **kw):
        original(self, item, *a, **kw)
        self.wake = event_type()

    return init


def test_when_a_batch_cannot_be_recorded_every_reader_in_it_gets_the_error(svc, monkeypatch):
    recorder = audit.ReadRecorder(svc.engine, svc.audit_key)

    def failing(*a, **kw):
        raise audit.AuditError("disk full")

    monkeypatch.setattr(audit, "_append_all", failing)
    with pytest.raises(audit.AuditError, match="disk full"):
        recorder.record(actor="u", action="case.viewed", subject="case:1")
    monkeypatch.undo()
    assert recorder.record(actor="u", action="case.viewed", subject="case:1").seq >= 1  # and it recovers


def test_a_batch_whose_head_cannot_be_written_fails_closed(svc, monkeypatch):
    """A batch writes the head file after its commit (outside the append lock); its readers get their data only
    once the head records them, and the error if it cannot."""
    recorder = audit.ReadRecorder(svc.engine, svc.audit_key)
    recorder.record(actor="u", action="case.viewed", subject="case:1")

    def failing(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audit, "_write_head", failing)
    with pytest.raises(OSError, match="No space"):
        recorder.record(actor="u", action="case.viewed", subject="case:1")
    monkeypatch.undo()
    event = recorder.record(actor="u", action="case.viewed", subject="case:1")
    assert audit.read_head_file(svc.audit_key) == (event.seq, event.entry_hash) and _verify(svc).ok


def test_a_batch_whose_commit_fails_leaves_the_head_file_as_it_was(svc):
    """The head file is never ahead of the database: a batch whose commit does not land leaves it unchanged,
    so the next read is not refused as if the log had been truncated."""
    from sqlalchemy import event

    recorder = audit.ReadRecorder(svc.engine, svc.audit_key)
    recorder.record(actor="u", action="case.viewed", subject="case:1")
    before = audit.read_head_file(svc.audit_key)

    def lost(conn):
        raise OSError("the connection was lost at commit")

    event.listen(svc.engine, "commit", lost)
    try:
        with pytest.raises(OSError, match="lost at commit"):
            recorder.record(actor="u", action="case.viewed", subject="case:2")
    finally:
        event.remove(svc.engine, "commit", lost)
    assert audit.read_head_file(svc.audit_key) == before
    assert recorder.record(actor="u", action="case.viewed", subject="case:3").seq == before[0] + 1
    assert _verify(svc).ok


def test_a_state_change_whose_commit_fails_takes_back_the_head_it_wrote(svc, monkeypatch):
    """A state change writes the head file just before its commit (under the append lock, so heads are written
    in order); if the commit itself then fails, that head is taken back, so the next read is not refused as if
    the log had been truncated, and the chain and its head agree."""
    recorder = audit.ReadRecorder(svc.engine, svc.audit_key)
    recorder.record(actor="u", action="case.viewed", subject="case:1")
    before = audit.read_head_file(svc.audit_key)

    def lost(dbapi_connection):
        raise OSError("the connection was lost at commit")

    with monkeypatch.context() as m:
        m.setattr(svc.engine.dialect, "do_commit", lost)
        with pytest.raises(OSError, match="lost at commit"), svc.engine.begin() as conn:
            audit.append(conn, svc.audit_key, actor="u", action="case.viewed", subject="case:2")
    assert audit.read_head_file(svc.audit_key) == before
    assert recorder.record(actor="u", action="case.viewed", subject="case:3").seq == before[0] + 1
    with svc.engine.begin() as conn:
        later = audit.append(conn, svc.audit_key, actor="u", action="case.viewed", subject="case:4")
    assert audit.read_head_file(svc.audit_key) == (later.seq, later.entry_hash)
    assert _verify(svc).ok
    with svc.engine.connect() as conn:
        audit.check_head(conn, svc.audit_key)


def test_a_head_is_taken_back_only_while_it_is_the_one_the_failed_commit_wrote(svc):
    key = svc.audit_key
    audit._write_head(key, 7, "7" * 64)
    audit._take_back_head(key, 6, "6" * 64, (5, "5" * 64))  # another writer has replaced it: kept
    assert audit.read_head_file(key) == (7, "7" * 64)
    audit._take_back_head(key, 7, "7" * 64, (6, "6" * 64))
    assert audit.read_head_file(key) == (6, "6" * 64)
    audit._take_back_head(key, 6, "6" * 64, None)  # the chain was empty before that commit: no head file
    assert audit.read_head_file(key) is None


def _crash_between_head_and_commit(svc) -> int:
    """What a crash leaves behind: a change wrote the head file just before its commit, which never landed."""
    with svc.engine.connect() as conn:
        seq, _ = audit.head(conn)
    audit._write_head(svc.audit_key, seq + 1, "ab" * 32)
    return seq + 1


def test_after_a_crash_an_operator_reanchors_on_the_intact_chain_and_it_is_on_the_record(svc):
    _fill(svc)
    recorder = audit.ReadRecorder(svc.engine, svc.audit_key)
    ahead = _crash_between_head_and_commit(svc)
    with pytest.raises(audit.AuditError, match="truncated"):
        recorder.record(actor="u", action="case.viewed", subject="case:1")
    assert not _verify(svc).ok

    def refused(code, **kw):
        with pytest.raises(audit.AuditError) as e:
            audit.reanchor(svc.engine, svc.audit_key, actor="operator:root", **kw)
        assert e.value.code == code
        assert audit.read_head_file(svc.audit_key) == (ahead, "ab" * 32)  # nothing changed

    refused("audit_reanchor_unconfirmed", recorded_seq=ahead - 1, reason="power cut during a commit")
    refused("reason_required", recorded_seq=ahead, reason="  ")
    done = audit.reanchor(svc.engine, svc.audit_key, actor="operator:root", recorded_seq=ahead,
                          reason="power cut during a commit")
    assert done.recorded == (ahead, "ab" * 32) and done.database[0] == ahead - 1
    assert done.entry.action == "audit.head_reanchored" and done.entry.actor == "operator:root"
    assert done.entry.payload == {"recorded_head": f"{ahead}:{'ab' * 32}", "reason": "power cut during a commit",
                                  "database_head": f"{done.database[0]}:{done.database[1]}"}
    assert audit.read_head_file(svc.audit_key) == (done.entry.seq, done.entry.entry_hash)
    assert _verify(svc).ok
    assert recorder.record(actor="u", action="case.viewed", subject="case:1").seq == done.entry.seq + 1
    with pytest.raises(audit.AuditError) as e:
        audit.reanchor(svc.engine, svc.audit_key, actor="operator:root", recorded_seq=done.entry.seq + 1,
                       reason="again")
    assert e.value.code == "audit_head_held"


def test_reanchoring_also_recovers_when_a_later_change_took_the_crashed_entrys_number(svc):
    _fill(svc)
    ahead = _crash_between_head_and_commit(svc)
    svc.record(actor="u", action="user.created", subject="user:x")  # takes number `ahead` with another hash
    assert "differs from the anchored head" in _verify(svc).reason
    done = audit.reanchor(svc.engine, svc.audit_key, actor="operator:root", recorded_seq=ahead, reason="crash")
    assert done.database[0] == ahead and _verify(svc).ok


def test_reanchoring_is_refused_when_the_chain_itself_is_broken(svc):
    _fill(svc)
    _raw(svc, "UPDATE audit_event SET actor = 'mallory' WHERE seq = 3")
    ahead = _crash_between_head_and_commit(svc)
    with pytest.raises(audit.AuditError) as e:
        audit.reanchor(svc.engine, svc.audit_key, actor="operator:root", recorded_seq=ahead, reason="crash")
    assert e.value.code == "audit_tampered" and "entry 3" in str(e.value)
    assert audit.read_head_file(svc.audit_key) == (ahead, "ab" * 32)


def test_only_an_operator_on_the_host_may_reanchor(svc):
    from toisio.audit_access import reanchor
    from toisio.authz import PermissionDenied
    from toisio.identity import Actor, AuthMethod, Role

    _fill(svc)
    ahead = _crash_between_head_and_commit(svc)
    auditor = Actor("aud", frozenset({Role.AUDITOR}), method=AuthMethod.TOKEN)
    with pytest.raises(PermissionDenied, match="operator"):
        reanchor(svc, auditor, recorded_seq=ahead, reason="crash")
    assert audit.read_head_file(svc.audit_key) == (ahead, "ab" * 32)


def test_the_head_file_never_goes_back(svc):
    """Writers of the head take turns on a lock of the file and never replace a newer head by an older one,
    whatever order they come in."""
    import random

    order = list(range(1, 41))
    random.Random(7).shuffle(order)
    assert not _in_threads(lambda i: audit._write_head(svc.audit_key, order[i], f"{order[i]:064x}"), 40)
    assert audit.read_head_file(svc.audit_key) == (40, f"{40:064x}")
    audit._write_head(svc.audit_key, 39, "0" * 64)
    assert audit.read_head_file(svc.audit_key)[0] == 40


def test_a_read_is_not_recorded_on_a_truncated_log(svc):
    _fill(svc)
    _raw(svc, "DELETE FROM audit_event WHERE seq = 5")
    with pytest.raises(audit.AuditError, match="truncated"):
        audit.ReadRecorder(svc.engine, svc.audit_key).record(actor="u", action="case.viewed", subject="case:1")


def test_an_unknown_action_is_refused_before_anything_is_written(svc):
    with pytest.raises(audit.AuditError, match="catalogue"):
        audit.ReadRecorder(svc.engine, svc.audit_key).record(actor="u", action="case.peeked", subject="case:1")


def test_the_verified_cache_keeps_a_value_only_under_its_stamp_and_stays_bounded():
    cache = audit.VerifiedCache(size=2)
    cache.put("a", (1, 1), "A")
    assert cache.get("a", (1, 1)) == "A" and cache.get("a", (2, 1)) is None
    cache.put("b", (1, None), "B")  # a stamp with no vouching entry is never kept
    assert cache.peek("b") is None
    cache.put("b", (1, 1), "B")
    cache.get("a", (1, 1))  # a is now the most recently used
    cache.put("c", (1, 1), "C")
    assert cache.peek("b") is None and cache.peek("a") == "A" and cache.peek("c") == "C"
    cache.touch("a", str.lower)
    assert cache.get("a", (1, 1)) == "a"


def test_a_request_reads_ahead_in_one_statement_and_uses_each_value_once(svc):
    """What a request registers with ``read_ahead`` is read in the statement of its next stamp, given back once
    without a statement, and never to a later request (a new ``read_ahead``) or after that one use."""
    import contextvars

    from sqlalchemy import event

    a, b = ("case:A", "case_digest"), ("case:B", "case_digest")
    for subject in ("case:A", "case:B"):
        svc.record(actor="u", action="case.viewed", subject=subject, payload={"case_digest": "d1"})
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        if "state_change" in statement:  # a stamp
            statements.append(statement)

    def fresh(pair):
        with svc.engine.connect() as conn:
            return audit.stamp(conn, [pair])

    def request():
        audit.read_ahead([b])
        assert audit.current_stamp(svc.engine, [a]) == fresh(a)
        before = len(statements)
        assert audit.current_stamp(svc.engine, [b]) == fresh(b) and len(statements) == before + 1  # only fresh()
        svc.record(actor="u", action="case.viewed", subject="case:B", payload={"case_digest": "d2"})
        assert audit.current_stamp(svc.engine, [b]) == fresh(b)  # used once: read again, and newer
        audit.read_ahead([a])  # the next request in the same context
        svc.record(actor="u", action="case.viewed", subject="case:B", payload={"case_digest": "d3"})
        assert audit.current_stamp(svc.engine, [b]) == fresh(b)  # nothing of the earlier request is used

    event.listen(svc.engine, "before_cursor_execute", count)
    try:
        contextvars.copy_context().run(request)
    finally:
        event.remove(svc.engine, "before_cursor_execute", count)
    assert len(statements) == 7  # 4 by fresh(), 3 by current_stamp (the read-ahead saved one)
    assert audit.current_stamp(svc.engine, [a]) == fresh(a)  # outside a request: a statement of its own


def test_the_append_lock_and_the_head_are_taken_in_one_round_trip(svc):
    """Every append takes the lock and reads the chain's head in one statement (a PostgreSQL function on
    PostgreSQL), and the chain it extends verifies."""
    from sqlalchemy import event

    _fill(svc, 2)
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(svc.engine, "before_cursor_execute", count)
    try:
        with svc.engine.begin() as conn:
            audit.append(conn, svc.audit_key, actor="u", action="case.viewed", subject="case:1")
    finally:
        event.remove(svc.engine, "before_cursor_execute", count)
    if svc.engine.dialect.name == "postgresql":
        assert sum("audit_locked_head()" in s for s in statements) == 1
        assert not any("pg_advisory_xact_lock" in s for s in statements)
    assert len([s for s in statements if s.lstrip().upper().startswith(("SELECT", "INSERT"))]) == 2
    assert _verify(svc).ok and _verify(svc).checked == 3
