"""Turning the portal's HTML forms into the documents the domain takes (no rules here: the domain's models
and validation decide what is right; this only reshapes ``name=value`` pairs).

Field names are dotted paths into the application (``applicant.email``,
``extraction.registries.hilmo.period.start``); a checkbox group repeats its name
(``extraction.registries.hilmo.variables``).  Empty fields are left out, so a missing value is reported
by the validation as missing, not as an empty string.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData

#: form fields that hold a list (checkbox groups, multi-line fields)
LIST_SUFFIXES = (".variables", ".code_columns", ".code_prefixes", ".match_on", ".age_bands", ".remove_users")
SKIP = ("csrf_token", "action")


def N_(text: str) -> str:
    """Mark a string for extraction (translated where it is shown)."""
    return text


#: the application form's steps in the portal (its wizard), each with the top-level fields it holds; a
#: problem found by the validation is shown with the step of its field (:func:`step_of`)
STEPS: dict[int, tuple[str, tuple[str, ...]]] = {
    1: (N_("Kind of application"), ("schema_version", "kind", "title", "purpose", "fee_category")),
    2: (N_("Applicant and organisation"), ("applicant", "organisation", "billing")),
    3: (N_("Data asked for"), ("extraction", "tabulation_plan", "minimisation_justification",
                           "pseudonymised_data_justification")),
    4: (N_("People and time"), ("processors", "processing_environment", "requested_validity")),
    5: (N_("Attachments"), ("research_plan", "ethics_statement_required", "ethics_statement")),
}
#: fields of an amendment, which has its own one-page form
AMENDMENT_FIELDS = ("permit_id", "change")


def step_of(path: str) -> int:
    """The step of the application form that holds a field (by its dotted path); a problem with the whole
    form (``(form)``) or an unknown field is shown on the first step."""
    top = path.split(".", 1)[0]
    return next((n for n, (_title, fields) in STEPS.items() if top in fields), 1)


def _set(target: dict, path: list[str], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def _processors(text: str) -> list[dict[str, str]]:
    """One processor per line: ``user id, name, organisation, undertaking date``."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if not any(parts):
            continue
        parts += [""] * (4 - len(parts))
        row = {"user_id": parts[0], "name": parts[1], "organisation": parts[2]}
        if parts[3]:
            row["confidentiality_undertaking_signed"] = parts[3]
        out.append({k: v for k, v in row.items() if v != ""})
    return out


def _tabulation(text: str) -> list[dict[str, Any]]:
    """One table per line: ``registry; rows (comma-separated); columns; statistic; value; dp EPSILON``; the last
    asks for the table with differential privacy (``dp 0.5``), at that share of the privacy budget."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(";")] + [""] * 6
        row: dict[str, Any] = {"registry": parts[0], "rows": [x.strip() for x in parts[1].split(",") if x.strip()]}
        if parts[2]:
            row["columns"] = [x.strip() for x in parts[2].split(",") if x.strip()]
        if parts[3]:
            row["statistic"] = parts[3]
        if parts[4]:
            row["value"] = parts[4]
        if parts[5]:
            word, _, epsilon = parts[5].replace("=", " ").partition(" ")
            row["privacy"] = "differential_privacy" if word.lower() in ("dp", "epsilon", "ε") else word
            row["epsilon"] = epsilon.strip() or None
        out.append(row)
    return out


def application_data(form: FormData) -> dict[str, Any]:
    """The nested application document of the form's fields."""
    data: dict[str, Any] = {}
    for key in sorted(set(form.keys())):
        if key in SKIP:
            continue
        values = [v for v in form.getlist(key) if isinstance(v, str)]
        if key in ("processors", "change.add_users"):  # an amendment adds users in the processors' format
            if values and values[0].strip():
                _set(data, key.split("."), _processors(values[0]))
            continue
        if key == "tabulation_plan":
            if values and values[0].strip():
                data["tabulation_plan"] = _tabulation(values[0])
            continue
        if key.endswith(LIST_SUFFIXES):
            items = [x.strip() for v in values for x in v.replace("\n", ",").split(",") if x.strip()]
            if key.endswith(".age_bands"):
                items = [int(x) if x.isdigit() else x for x in items]
            if items:
                _set(data, key.split("."), items)
            continue
        value = values[-1].strip() if values else ""
        if value == "":
            continue
        if value in ("true", "false") and key.endswith(("_required", ".public")):
            _set(data, key.split("."), value == "true")
            continue
        if (key.endswith("controls_per_case") or key == "schema_version") and value.isdigit():
            _set(data, key.split("."), int(value))
            continue
        _set(data, key.split("."), value)
    # a registry with no variables ticked is not asked for (its period fields alone do not ask for it)
    regs = data.get("extraction", {}).get("registries")
    if isinstance(regs, dict):
        for name in [n for n, r in regs.items() if not (isinstance(r, dict) and r.get("variables"))]:
            del regs[name]
        if not regs:
            del data["extraction"]["registries"]
    cohort = data.get("extraction", {}).get("cohort")
    if isinstance(cohort, dict) and not cohort.get("registry"):
        del data["extraction"]["cohort"]
    return data


def action_fields(form: FormData) -> dict[str, Any]:
    """An action's fields (empty ones left out; the action's pydantic body converts the types)."""
    out: dict[str, Any] = {}
    for key in form:
        if key in SKIP:
            continue
        value = form.get(key)
        if isinstance(value, str) and value.strip() != "":
            out[key] = value.strip()
    return out
