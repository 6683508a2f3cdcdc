"""Docs generated from the rule tables stay in step with them."""

from permits.docs import DOC, render


def test_permits_reference_is_generated_from_the_tables():
    assert DOC.read_text(encoding="utf-8") == render(), "run `make docs`"
