"""Text that can be stored: valid Unicode (no unpaired surrogates) and of bounded size.

JSON lets a client send ``"\\ud800"``, which decodes to a Python string that cannot be encoded as
UTF-8: stored as is it fails deep in the database driver (a 500).  Every model that takes text from
outside runs :func:`check_unicode` first, so the error names the field instead.
"""

from __future__ import annotations

from typing import Any

MAX_TEXT = 20_000  # characters in one free-text field (reasons, summaries, remarks)


def unpaired_surrogate(value: str) -> int | None:
    """The index of the first character UTF-8 cannot encode, or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def find_bad_text(data: Any, path: tuple = ()) -> tuple[tuple, int] | None:
    """The path of the first string in ``data`` (nested dicts and lists) that is not valid Unicode."""
    if isinstance(data, str):
        at = unpaired_surrogate(data)
        return (path, at) if at is not None else None
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(k, str) and unpaired_surrogate(k) is not None:
                return (path + (k,), 0)
            found = find_bad_text(v, path + (k,))
            if found:
                return found
    if isinstance(data, list | tuple):
        for i, v in enumerate(data):
            found = find_bad_text(v, path + (i,))
            if found:
                return found
    return None


def check_unicode(data: Any) -> Any:
    """``data`` unchanged, or ValueError naming where a string is not valid Unicode (for model validators)."""
    found = find_bad_text(data)
    if found:
        path, at = found
        where = ".".join(str(p) for p in path) or "text"
        raise ValueError(f"{where}: character {at} is an unpaired surrogate; text must be valid Unicode")
    return data
