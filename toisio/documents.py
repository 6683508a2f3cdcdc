"""Helpers shared by every stage: loading YAML/JSON documents into models, errors with stable codes,
and writing generated reference docs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel

from toisio.errors import Invalid

M = TypeVar("M", bound=BaseModel)


class CodedError(Invalid):
    """An invalid request with a stable ``code`` given positionally (see :mod:`toisio.errors`)."""

    default_code = "invalid_request"

    #: codes whose status is not 422: a missing thing is 404, a wrong state 409
    STATUS_OF_CODE = {"not_found": 404, "no_workspace": 404, "illegal_state": 409, "exists": 409,
                      "already_decided": 409, "already_submitted": 409, "running": 409}

    def __init__(self, message: str, code: str | None = None, *, http_status: int | None = None):
        code = code or self.default_code
        super().__init__(message, code=code, http_status=http_status or self.STATUS_OF_CODE.get(code))


def load_model(path: str | Path, model: type[M], what: str, error: type[Exception] = ValueError) -> M:
    """Read a JSON or YAML file into ``model``; every error names the file (and the field)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: cannot read {what} file: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValueError as exc:
        raise error(f"{path}: invalid {what}:\n{exc}") from exc


def write_generated(path: Path, render: Callable[[], str]) -> Path:
    """Write a generated reference document (``make docs``)."""
    path.write_text(render(), encoding="utf-8")
    return path
