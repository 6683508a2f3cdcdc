"""Docs generated from the rule tables stay in step with them."""

from pathlib import Path

from permits.docs import DOC, render


def test_permits_reference_is_generated_from_the_tables():
    assert DOC.read_text(encoding="utf-8") == render(), "run `make docs`"


def test_airlock_reference_is_generated_from_the_tables():
    from secure_env.airlock.docs import DOC as AIRLOCK_DOC
    from secure_env.airlock.docs import render as render_airlock

    assert AIRLOCK_DOC.read_text(encoding="utf-8") == render_airlock(), "run `make docs`"


def test_workspace_reference_is_generated_from_the_tables():
    from secure_env.workspace.docs import DOC as WORKSPACE_DOC
    from secure_env.workspace.docs import render as render_workspace

    assert WORKSPACE_DOC.read_text(encoding="utf-8") == render_workspace(), "run `make docs`"


def test_every_test_named_in_the_security_properties_exists():
    """docs/security.md names the tests that hold each property; a renamed or deleted test breaks this."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "security.md").read_text(encoding="utf-8")
    source = "\n".join(p.read_text(encoding="utf-8") for p in (root / "tests").rglob("test_*.py"))
    names = set(re.findall(r"\b(test_[a-z0-9_]+)\b", text)) - {"test_" + p.stem[5:] for p in
                                                               (root / "tests").rglob("test_*.py")}
    missing = sorted(n for n in names if f"def {n}(" not in source)
    assert not missing, missing
    for path in re.findall(r"`(tests/[a-z_/]+\.py)", text):
        assert (root / path).exists(), path
    for path in re.findall(r"`((?:toisio|catalogue|permits|secure_env|pseudonymise|flows)/[a-z_/]+\.py)", text):
        assert (root / path).exists(), path


def test_every_pragma_no_cover_says_why():
    """Issue 13 item 6: an excluded line carries its reason."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    bare = []
    for pkg in ("toisio", "catalogue", "permits", "secure_env", "pseudonymise", "flows"):
        for f in (root / pkg).rglob("*.py"):
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(r"pragma: no cover\s*$", line):
                    bare.append(f"{f.relative_to(root)}:{n}")
    assert not bare, bare


def test_every_quarantine_reason_is_explained_in_the_pipeline_doc():
    from pseudonymise.validate import REASONS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "pipeline.md").read_text()
    table = doc[doc.index("## Quarantine reasons"):]
    missing = [r for r in REASONS if f"`{r}`" not in table]
    assert not missing, f"docs/pipeline.md explains no {missing}"
