"""Workspaces: created only for a data permit in force, tokens per named analyst, lockdown config, destroy."""

import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest

from permits.permissions import PermissionDenied
from permits.service import act, submit_form
from secure_env.workspace import provision as W
from secure_env.workspace.lockdown import DISABLED_EXTENSIONS, KERNEL_NAME
from tests.factories import DAY, make_case, make_delivery, make_form, make_staff, who


def _delivery(tmp_path, permit_id):
    d = make_delivery(tmp_path / "delivery", permit_id)
    (d / "hilmo").mkdir(parents=True)
    (d / "hilmo" / "part-00000.parquet").write_bytes(b"PAR1 not really")
    return d


def test_a_delivery_with_a_malformed_or_foreign_manifest_is_refused(svc, active, tmp_path):
    from pseudonymise.manifest import ManifestError

    staff, permit = active
    d = _delivery(tmp_path, "TOISIO-2026-999")
    with pytest.raises(W.WorkspaceError, match="belongs to another permit"):
        W.create(svc, who(svc, "hanna"), permit, d)
    (d / "manifest.json").write_text(json.dumps({"permit_id": permit}))
    with pytest.raises(ManifestError, match="not a valid delivery manifest") as exc:
        W.create(svc, who(svc, "hanna"), permit, d)
    assert exc.value.code == "bad_manifest" and exc.value.http_status == 422


@pytest.fixture
def active(svc):
    staff = make_staff(svc)
    return staff, make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id


def test_create_with_tokens_for_named_analysts_and_lockdown(svc, active, tmp_path):
    staff, permit = active
    tokens = W.create(svc, who(svc, "hanna"), permit, _delivery(tmp_path, permit))
    assert set(tokens) == {"bob"}
    assert W.analyst_for_token(svc, permit, tokens["bob"]) == "bob"
    with pytest.raises(PermissionDenied, match="unknown token"):
        W.analyst_for_token(svc, permit, "guess")
    p = W.paths(svc, permit)
    assert not str(p.data).startswith(str(p.root))  # the data lies outside the Jupyter root
    assert "bob" in p.tokens.read_text() and tokens["bob"] not in p.tokens.read_text()  # hashed only
    conf = (p.config / "jupyter_server_config.py").read_text()
    for line in ("files_handler_class = None", "terminals_enabled = False", "allow_hidden = False",
                 'transport = "ipc"', "WorkspaceAuthorizer", "lock_all_plugins = True"):
        assert line in conf
    page = json.loads((p.config / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"] == DISABLED_EXTENSIONS
    menu = json.loads((p.config / "lab" / "user-settings" / "@jupyterlab" / "mainmenu-extension" /
                       "plugin.jupyterlab-settings").read_text())
    [item] = menu["menus"][0]["items"]  # JupyterLab's "Release" menu opens the release page in a tab of its own
    assert item["command"] == "help:open" and item["args"]["url"] == "/toisio/release"
    assert item["args"]["newBrowserTab"] is True
    kernel = json.loads((p.config / "kernels" / KERNEL_NAME / "kernel.json").read_text())
    argv = kernel["argv"]
    bw = argv[argv.index("bwrap"):]
    assert argv[:2] == ["sh", str(p.config / "kernel-launch.sh")]
    assert "prlimit" in bw[bw.index("--"):]  # the limits are set inside the sandbox's user namespace
    for flag in ("--unshare-all", "--cap-drop", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in bw
    assert bw[bw.index("--uid") + 1] != "0" and bw[bw.index("--cap-drop") + 1] == "ALL"
    assert ["--ro-bind", str(p.data), str(p.data)] == bw[bw.index(str(p.data)) - 1:bw.index(str(p.data)) + 2]
    bound = {bw[i + 2] for i, a in enumerate(bw) if a in ("--bind", "--ro-bind")}
    assert str(svc.settings.home) not in bound and str(svc.settings.keys) not in bound
    assert not any(str(svc.settings.keys) in b or b == str(Path(__file__).resolve().parents[2]) for b in bound)
    script = (p.config / "kernel-launch.sh").read_text()
    assert "set -eu" in script and "cgroup.procs" in script


def test_removed_analyst_token_stops_working(svc, active, tmp_path):
    staff, permit = active
    tokens = W.create(svc, who(svc, "hanna"), permit, _delivery(tmp_path, permit))
    amendment = make_form(kind="amendment", purpose=None, research_plan=None, extraction=None,
                          requested_validity=None, permit_id=permit, processors=[], change={"remove_users": ["bob"]})
    case = submit_form(svc, staff["alice"], amendment).case_id
    act(svc, staff["hanna"], case, "confirm_complete")
    act(svc, staff["hanna"], case, "present")
    act(svc, staff["dora"], case, "approve", valid_until=date(2030, 1, 1))
    with pytest.raises(PermissionDenied, match="no longer named"):
        W.analyst_for_token(svc, permit, tokens["bob"])


def test_refused_for_a_permit_not_in_force_or_a_data_request(svc, tmp_path):
    staff = make_staff(svc)
    case = submit_form(svc, staff["alice"], make_form(), today=DAY).case_id
    with pytest.raises(W.WorkspaceError, match="not in force"):
        W.create(svc, who(svc, "hanna"), case, _delivery(tmp_path, case))


def test_destroy_records_what_was_deleted(svc, active, tmp_path):
    from toisio import audit

    staff, permit = active
    W.create(svc, who(svc, "hanna"), permit, _delivery(tmp_path, permit))
    deleted = W.destroy(svc, who(svc, "hanna"), permit)
    assert deleted["files"] >= 4 and not W.paths(svc, permit).base.exists()
    with svc.engine.connect() as conn:
        last = audit.events(conn, subject=f"permit:{permit}")[-1]
    assert last.action == "workspace.destroyed" and last.payload["key_retained"] is True


def test_isolation_probe_fails_closed(svc, active, tmp_path, monkeypatch):
    from secure_env.workspace import sandbox
    from secure_env.workspace import server as S

    staff, permit = active
    W.create(svc, who(svc, "hanna"), permit, _delivery(tmp_path, permit))
    lock = W.lockdown_for(svc, permit)
    (W.paths(svc, permit).runtime).mkdir(exist_ok=True)
    S.probe_isolation(lock)  # holds here
    real = sandbox.bwrap_argv
    monkeypatch.setattr(sandbox, "bwrap_argv", lambda spec, cmd: ["bwrap", "--no-such-option", "--", *cmd])
    with pytest.raises(W.WorkspaceError, match="kernel isolation is not available") as exc:
        S.probe_isolation(lock)
    assert exc.value.code == "no_isolation"
    # A sandbox that keeps the network, the uid and the capabilities (no bwrap at all) is refused by the probe.
    monkeypatch.setattr(sandbox, "bwrap_argv", lambda spec, cmd: ["env", *cmd])
    with pytest.raises(W.WorkspaceError, match="does not hold"):
        S.probe_isolation(lock)
    monkeypatch.setattr(sandbox, "bwrap_argv", real)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(W.WorkspaceError, match="bubblewrap"):
        S.probe_isolation(lock)


def test_no_process_limit_as_root_fails_closed(svc, active, tmp_path, monkeypatch):
    from secure_env.workspace import sandbox
    from secure_env.workspace import server as S

    staff, permit = active
    W.create(svc, who(svc, "hanna"), permit, _delivery(tmp_path, permit))
    lock = W.lockdown_for(svc, permit)
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox, "probe", lambda spec: None)
    with pytest.raises(W.WorkspaceError, match="no process limit"):
        S.probe_isolation(replace(lock, cgroups=sandbox.Cgroups(None, None, 1)))


def test_outputs_of_a_permit_with_a_workspace_must_come_from_it(svc, active, tmp_path):
    from secure_env.airlock import outputs as airlock

    staff, permit = active
    W.create(svc, who(svc, "hanna"), permit, _delivery(tmp_path, permit))
    outside = tmp_path / "table.csv"
    outside.write_text("age_band,n\n0-39,120\n40-59,210\n")
    inside = W.paths(svc, permit).root / "scratch" / "table.csv"
    inside.write_text(outside.read_text())
    bob = who(svc, "bob")
    request_id = airlock.create_request(svc, bob, permit)
    context = {"description": "persons by age band", "method": "distinct pseudonyms", "index": ["age_band"]}
    with pytest.raises(airlock.AirlockError, match="must come from its workspace") as exc:
        airlock.add_file(svc, bob, request_id, outside, context)
    assert exc.value.code == "outside_workspace"
    airlock.add_file(svc, bob, request_id, inside, context)


def test_a_new_token_for_a_named_analyst_replaces_the_old_one(svc, active, tmp_path):
    staff, permit = active
    old = W.create(svc, who(svc, "hanna"), permit, _delivery(tmp_path, permit))["bob"]
    new = W.issue_token(svc, who(svc, "hanna"), permit, "bob")
    assert W.analyst_for_token(svc, permit, new) == "bob"
    with pytest.raises(PermissionDenied, match="unknown token"):
        W.analyst_for_token(svc, permit, old)
    with pytest.raises(W.WorkspaceError, match="not named") as exc:
        W.issue_token(svc, who(svc, "hanna"), permit, "mallory")
    assert exc.value.code == "not_named"
