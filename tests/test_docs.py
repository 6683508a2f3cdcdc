"""Docs generated from the rule tables stay in step with them."""

from permits.docs import DOC, render


def test_permits_reference_is_generated_from_the_tables():
    assert DOC.read_text(encoding="utf-8") == render(), "run `make docs`"


def test_airlock_reference_is_generated_from_the_tables():
    from secure_env.docs import DOC as AIRLOCK_DOC
    from secure_env.docs import render as render_airlock

    assert AIRLOCK_DOC.read_text(encoding="utf-8") == render_airlock(), "run `make docs`"


def test_workspace_reference_is_generated_from_the_tables():
    from secure_env.workspace_docs import DOC as WORKSPACE_DOC
    from secure_env.workspace_docs import render as render_workspace

    assert WORKSPACE_DOC.read_text(encoding="utf-8") == render_workspace(), "run `make docs`"
