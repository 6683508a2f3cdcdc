"""The layout reads as the flow of data (issue 13, item 5): computed from the source, no import runs up
against the flow, no import cycle between packages, the foundation imports no stage, the kernel-side helpers
never reach the database, and audit actions come from one catalogue."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import layout
from toisio import audit

ROOT = Path(__file__).resolve().parents[2]


def test_no_import_runs_up_against_the_flow_and_there_is_no_cycle():
    edges, upward = layout.graph()
    assert upward == [], "imports that run up against the flow: " + ", ".join(f"{a} -> {b}" for a, b in upward)
    assert layout.cycles(edges) == []
    # the stages are really wired: each depends on the foundation, and the composition root on every stage
    for name, _ in layout.LAYERS[2:]:
        if name != "secure_env.analyst":
            assert (name, "toisio") in edges, name  # (the catalogue is plain data and needs nothing)
    for stage in ("flows", "permits", "pseudonymise", "secure_env.workspace", "secure_env.airlock"):
        assert ("toisio.app", stage) in edges, stage


def test_every_module_belongs_to_a_layer():
    missing = [m for m, _ in layout._modules() if layout.layer_of(m) is None and m not in layout.PACKAGES
               and m != "secure_env"]
    assert missing == []


def test_the_detector_finds_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    for pkg, body in {"toisio": "from permits.service import act\n", "permits": "import toisio.audit\n",
                      "catalogue": "", "pseudonymise": "", "secure_env": "", "flows": ""}.items():
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        (tmp_path / pkg / "m.py").write_text(body)
    monkeypatch.setattr(layout, "ROOT", tmp_path)
    edges, upward = layout.graph()
    assert upward == [("toisio.m", "permits.service.act")]
    assert layout.cycles(edges) == [["permits", "toisio"]]


def test_the_foundation_imports_no_stage_even_inside_functions():
    stages = ("catalogue", "permits", "pseudonymise", "secure_env", "flows")
    for path in (ROOT / "toisio").rglob("*.py"):
        if "app" in path.relative_to(ROOT / "toisio").parts:
            continue
        for statement in layout.imports(path):
            assert not any(t.split(".")[0] in stages for t in statement), (path, statement)


def test_the_kernel_side_helpers_never_import_the_database():
    allowed = ("secure_env.airlock.disclosure", "secure_env.airlock.profiles", "secure_env.airlock.tables",
               "secure_env.airlock.regression", "secure_env.airlock.survival")
    for statement in layout.imports(ROOT / "secure_env" / "analyst.py"):
        ours = {t for t in statement if t.split(".")[0] in layout.PACKAGES}
        assert all(t.startswith(allowed) for t in ours), statement
    code = ("import sys; import secure_env.analyst; import secure_env.airlock.tables, secure_env.airlock.regression, "
            "secure_env.airlock.survival, secure_env.workspace.dp_client; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'psycopg', 'permits', 'flows') "
            "or m in ('toisio.db', 'toisio.service', 'toisio.audit', 'toisio.keystore', 'toisio.identity')]; "
            "print(','.join(sorted(bad)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_architecture_doc_shows_the_current_graph():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert layout.mermaid(layout.graph()[0]) in doc, "run `make docs`"


# ---------------------------------------------------------------- the audit action catalogue

def test_every_lifecycle_event_has_its_audit_action():
    from permits.lifecycle import Event
    from secure_env.airlock.lifecycle import RequestEvent

    known = {a.value for a in audit.AuditAction}
    assert {f"case.{e.value}" for e in Event} <= known
    assert {f"output.{e.value}" for e in RequestEvent} <= known


def test_every_action_named_in_the_code_is_in_the_catalogue():
    """Every literal given as ``action=`` to the audit log (append / record) is in the catalogue; dynamic ones
    (``case.<event>``, ``output.<event>``, ``extraction.<status>``) are refused at run time by append()."""
    known = {a.value for a in audit.AuditAction}
    found = set()
    for module, path in layout._modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "append", "record", "_record_user", "_record_token", "_audit"):
                for kw in node.keywords:
                    if kw.arg == "action" and isinstance(kw.value, ast.Constant):
                        found.add((module, kw.value.value))
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and "." in arg.value \
                            and arg.value.split(".")[0] in {a.split(".")[0] for a in known}:
                        found.add((module, arg.value))
    assert len(found) >= 30
    assert [f for f in found if f[1] not in known] == []


def test_an_unknown_action_is_refused(svc):
    with svc.engine.begin() as conn, pytest.raises(audit.AuditError, match="not in the audit action catalogue"):
        audit.append(conn, svc.audit_key, actor="a", action="case.teleported", subject="case:X")
