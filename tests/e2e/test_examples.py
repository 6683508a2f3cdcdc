"""The shipped examples stay valid."""

import hashlib
from pathlib import Path

from permits.application import load_form
from permits.rules import check_form


def test_example_application_is_valid_and_refers_to_the_shipped_plan():
    form = load_form("examples/application-diabetes.yaml")
    check_form(form)
    plan = Path("examples") / form.research_plan.filename
    assert hashlib.sha256(plan.read_bytes()).hexdigest() == form.research_plan.sha256
