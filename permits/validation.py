"""Validate an application without submitting it: every problem at once, each with its field path.

The same check serves the API (``POST /api/v1/applications/validate``), the portal's live form and
``toisio permits validate``.  It reports, in one list:

* a document that is not JSON or YAML, or that repeats a key (the second value would silently win);
* every field error of the form, with its path (``applicant.email``), what was expected and, for a
  misspelt field name, "did you mean";
* once the form is well formed, every broken application rule (:mod:`permits.rules`) and every
  unknown registry or variable of the extraction description, with "did you mean".
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from permits.application import MISSING_FOR_KIND, ApplicationForm
from permits.rules import RULES
from permits.scope import extraction_problems

MAX_DOCUMENT_BYTES = 1024 * 1024


class Problem(BaseModel):
    """One thing wrong with an application."""

    model_config = ConfigDict(frozen=True)

    path: str
    message: str
    code: str
    expected: str | None = None
    suggestion: str | None = None


class Report(BaseModel):
    """The result of validating an application."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    problems: tuple[Problem, ...] = ()


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping with the same key twice."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(f"key {k!r} appears twice")
        out[k] = v
    return out


def parse_document(text: str | bytes) -> tuple[Any, Problem | None]:
    """Parse JSON (tried first) or YAML, refusing repeated keys; (data, None) or (None, the problem)."""
    if isinstance(text, bytes):
        if len(text) > MAX_DOCUMENT_BYTES:
            return None, Problem(path="(document)", code="too_large",
                                 message=f"the document is over {MAX_DOCUMENT_BYTES:,} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, Problem(path="(document)", code="not_utf8",
                                 message=f"the document is not UTF-8 text (byte {exc.start})")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=_no_duplicates), None
        except DuplicateKey as exc:
            return None, Problem(path="(document)", code="duplicate_key", message=str(exc))
        except json.JSONDecodeError as exc:
            return None, Problem(path="(document)", code="not_json",
                                 message=f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader), None  # noqa: S506 (a SafeLoader subclass)
    except yaml.constructor.ConstructorError as exc:
        return None, Problem(path="(document)", code="duplicate_key", message=str(exc.problem))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return None, Problem(path="(document)", code="not_yaml",
                             message=f"neither valid JSON nor valid YAML{where}: {getattr(exc, 'problem', exc)}")


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model whose field the location ``loc`` names (for "did you mean" on unknown fields)."""
    model: Any = ApplicationForm
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return model if isinstance(model, type) and issubclass(model, BaseModel) else None
        model = _inner_model(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


_EXPECTED = {"date_from_datetime_parsing": "a date YYYY-MM-DD", "date_parsing": "a date YYYY-MM-DD",
             "date_type": "a date YYYY-MM-DD", "string_type": "text", "bool_parsing": "true or false",
             "int_parsing": "a whole number", "missing": "a value", "string_too_short": "non-empty text",
             "too_short": "at least one item", "dict_type": "a mapping", "tuple_type": "a list",
             "model_type": "a mapping of fields"}


def _field_problems(exc: ValidationError) -> list[Problem]:
    out = []
    for e in exc.errors(include_url=False):
        loc = tuple(e.get("loc", ()))
        path = ".".join(str(p) for p in loc) or "(form)"
        kind = e.get("type", "invalid")
        if kind == MISSING_FOR_KIND:  # one problem per field the kind of application needs, at that field
            ctx = e.get("ctx") or {}
            for field in str(ctx.get("fields", "")).split(", "):
                message = f"{ctx['kind']} needs {field}" if "kind" in ctx else e.get("msg", "missing")
                out.append(Problem(path=".".join([*map(str, loc), field]), code="missing", expected="a value",
                                   message=message))
            continue
        message = e.get("msg", "invalid").removeprefix("Value error, ")
        expected = _EXPECTED.get(kind)
        suggestion = None
        if kind == "extra_forbidden" and loc:
            model = _model_at(loc[:-1])
            known = list(model.model_fields) if model else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            suggestion = close[0] if close else None
            message = f"unknown field {loc[-1]!r}" + (f" (did you mean {suggestion!r}?)" if suggestion else "")
            expected = "one of: " + ", ".join(known) if known else None
        elif kind in ("enum", "literal_error"):
            expected = str((e.get("ctx") or {}).get("expected", "")) or None
            given = e.get("input")
            if isinstance(given, str) and expected:
                choices = [c.strip(" '") for c in expected.replace(" or ", ",").split(",")]
                close = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
                suggestion = close[0] if close else None
                if suggestion:
                    message += f" (did you mean {suggestion!r}?)"
        elif kind == "string_pattern_mismatch":
            expected = f"text matching {(e.get('ctx') or {}).get('pattern')}"
        out.append(Problem(path=path, message=message, code=kind, expected=expected, suggestion=suggestion))
    return out


def _suggestion_in(message: str) -> str | None:
    if "(did you mean '" in message:
        return message.split("(did you mean '", 1)[1].split("'", 1)[0]
    return None


def validate_data(data: Any) -> Report:
    """Validate already-parsed data (a mapping) as an application form."""
    if not isinstance(data, dict):
        return Report(ok=False, problems=(Problem(path="(document)", code="not_a_mapping",
                                                  message="an application is a mapping of fields",
                                                  expected="a mapping of fields"),))
    try:
        form = ApplicationForm.model_validate(data)
    except ValidationError as exc:
        return Report(ok=False, problems=tuple(_field_problems(exc)))
    return validate_form(form)


def validate_form(form: ApplicationForm) -> Report:
    """The rules and the extraction description of a well-formed form."""
    problems = [Problem(path="(form)", code=rule.code, message=msg)
                for rule in RULES if (msg := rule.check(form)) is not None]
    if form.extraction is not None:
        ext = form.extraction
        for p in extraction_problems(ext.registries, ext.cohort, ext.generalise):
            path, message = p.split(": ", 1)
            problems.append(Problem(path=f"extraction.{path}", code="extraction_invalid", message=message,
                                    suggestion=_suggestion_in(message)))
    return Report(ok=not problems, problems=tuple(problems))


def validate_document(text: str | bytes) -> Report:
    """Validate an application document (JSON or YAML text)."""
    data, problem = parse_document(text)
    if problem is not None:
        return Report(ok=False, problems=(problem,))
    return validate_data(data)
