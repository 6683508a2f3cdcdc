"""Checks on a controller's extract file before Spark reads a line of it.

A file whose header does not match its registry contract (names and order) is refused, naming the
file and the columns: with two columns swapped in the header every row would otherwise be read
into the wrong variables and delivered (the values of a swapped pair often pass the same checks).
An empty file, a compressed or binary file and a file in another delimiter are refused with a
message that says which.  A UTF-8 byte-order mark before the header is tolerated.
"""

from __future__ import annotations

from pathlib import Path

from catalogue.registries import RegistrySchema
from toisio.errors import Invalid

BOM = "\ufeff"
GZIP_MAGIC = b"\x1f\x8b"
OTHER_DELIMITERS = (",", ";", "\t", "|")


class ExtractFileError(Invalid):
    """An extract file that cannot be read as its registry's CSV."""


def data_files(source: Path) -> list[Path]:
    """The files Spark would read at ``source`` (a file, or a directory of part files)."""
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    return [source]


def header_problem(found: str, schema: RegistrySchema) -> str | None:
    """Why ``found`` (the first line, BOM and line end removed) is not the contract's header, or None."""
    expected = schema.names
    if found == schema.header:
        return None
    cols = [c.strip() for c in found.split(schema.delimiter)]
    if len(cols) == 1:
        for d in OTHER_DELIMITERS:
            if d != schema.delimiter and len(found.split(d)) == len(expected):
                return (f"the header is delimited by {d!r}, the registry's contract uses {schema.delimiter!r} "
                        f"(found {found!r})")
    missing = [c for c in expected if c not in cols]
    extra = [c for c in cols if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unknown column(s) {', '.join(extra)}")
        return "; ".join(parts) + f" (expected {schema.header!r})"
    if len(cols) != len(set(cols)):
        return f"repeated column name(s) in the header (expected {schema.header!r})"
    moved = [f"{c} (expected at position {expected.index(c) + 1}, found at {i + 1})"
             for i, c in enumerate(cols) if expected[i] != c]
    return "columns in the wrong order: " + ", ".join(moved) + f" (expected {schema.header!r})"


def check_extract(source: Path, schema: RegistrySchema) -> list[Path]:
    """Refuse (:class:`ExtractFileError`) a file that is empty, binary or compressed, or whose header is not
    the registry's; return the files checked."""
    files = data_files(source)
    if not files:
        raise ExtractFileError(f"{source}: no extract file in this directory")
    for f in files:
        with open(f, "rb") as fh:
            head = fh.read(65536)
        if not head:
            raise ExtractFileError(f"{f}: the file is empty (expected the header {schema.header!r} and rows)")
        if head.startswith(GZIP_MAGIC):
            raise ExtractFileError(f"{f}: the file is gzip-compressed, not CSV text; decompress it first")
        if b"\0" in head:
            raise ExtractFileError(f"{f}: the file is binary, not CSV text")
        first = head.split(b"\n", 1)[0].rstrip(b"\r")
        try:
            line = first.decode("utf-8").removeprefix(BOM)
        except UnicodeDecodeError:
            raise ExtractFileError(f"{f}: the header is not UTF-8 text") from None
        problem = header_problem(line, schema)
        if problem:
            raise ExtractFileError(f"{f}: {problem}")
    return files
