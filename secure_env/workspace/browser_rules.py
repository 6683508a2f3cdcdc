"""What a workspace's browser may read from and write to the Jupyter root: pure rules, one place.

The kernel can write anything into scratch (a copy of the data, a CSV of every row).  JupyterLab
needs ``GET /api/contents/<path>?content=1`` to open a file, so without these rules that file
would reach the analyst's own machine, and with it row-level data (SATRE 3.1.05, 3.1.12; EHDS
Art. 73).  Only what JupyterLab needs to work is served: notebooks, small text that does not look
like a table, and images of figures.  Everything else leaves only through an output request.

Writes from the browser are the other direction (ingress, SATRE 3.1.04): saving notebooks and
editing small text files keep working; uploading files (JupyterLab sends them base64, large ones
in chunks) is refused, and bringing code or lookup tables in is an import request that a data
steward approves.

Each rule returns ``None`` (allowed) or the reason it refuses, which the server shows to the user
and records in the session audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

#: File formats that hold data, whatever their size: never served to or accepted from the browser.
DATA_EXTENSIONS = frozenset({
    ".csv", ".tsv", ".tab", ".psv", ".dat", ".txt.gz", ".parquet", ".pq", ".feather", ".arrow", ".ipc", ".orc",
    ".avro", ".xlsx", ".xlsm", ".xls", ".ods", ".json", ".jsonl", ".ndjson", ".geojson", ".xml", ".pkl",
    ".pickle", ".joblib", ".npy", ".npz", ".h5", ".hdf5", ".hdf", ".nc", ".mat", ".sqlite", ".sqlite3", ".db",
    ".duckdb", ".dta", ".sav", ".zsav", ".por", ".sas7bdat", ".xpt", ".rds", ".rdata", ".rda", ".zip", ".gz",
    ".bz2", ".xz", ".zst", ".lz4", ".tar", ".tgz", ".7z", ".rar", ".bin", ".dump", ".sql",
})
#: Images a notebook or the file browser shows (figures); SVG is text and follows the text rules.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
TABLE_DELIMITERS = (",", ";", "\t", "|")
TABLE_MIN_LINES = 10
TABLE_SHARE = 0.8


@dataclass(frozen=True)
class BrowserLimits:
    """Sizes above which the browser is refused."""

    text_bytes: int = 256 * 1024
    image_bytes: int = 5 * 1024 * 1024
    notebook_bytes: int = 20 * 1024 * 1024


def _suffix(path: str) -> str:
    name = PurePosixPath(path).name.lower()
    if name.endswith(".txt.gz"):
        return ".txt.gz"
    return PurePosixPath(name).suffix


def looks_tabular(text: str) -> bool:
    """Whether text reads as a delimited table: at least :data:`TABLE_MIN_LINES` lines of which
    :data:`TABLE_SHARE` or more hold the same (non-zero) number of one delimiter."""
    lines = [line for line in text.splitlines()[:500] if line.strip()]
    if len(lines) < TABLE_MIN_LINES:
        return False
    for delim in TABLE_DELIMITERS:
        counts: dict[int, int] = {}
        for line in lines:
            n = line.count(delim)
            if n:
                counts[n] = counts.get(n, 0) + 1
        if counts and max(counts.values()) >= TABLE_SHARE * len(lines):
            return True
    return False


def _text_refusal(path: str, size: int, text: str | None, limits: BrowserLimits, verb: str) -> str | None:
    if size > limits.text_bytes:
        return (f"{path} is {size:,} bytes; files over {limits.text_bytes:,} bytes are not {verb} the browser "
                f"(ask for an output release instead)")
    if text is not None and looks_tabular(text):
        return f"{path} looks like a table of data; tables leave a workspace only through an output request"
    return None


def _cell_texts(cell: dict) -> list[str]:
    def text(v) -> str:
        return "".join(v) if isinstance(v, list) else str(v or "")

    out = [text(cell.get("source"))]
    for o in cell.get("outputs") or []:
        if not isinstance(o, dict):
            continue
        out.append(text(o.get("text")))
        for mime, v in (o.get("data") or {}).items():
            if mime.startswith("text/") and mime != "text/html":
                out.append(text(v))
    return out


def _notebook_refusal(path: str, raw: bytes) -> str | None:
    """A notebook the kernel wrote can carry rows in a cell or an output: refuse one that holds a table."""
    import json

    try:
        nb = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None  # not a notebook: Jupyter itself refuses to open it
    cells = nb.get("cells") if isinstance(nb, dict) else None
    for n, cell in enumerate(cells if isinstance(cells, list) else [], start=1):
        if isinstance(cell, dict) and any(looks_tabular(t) for t in _cell_texts(cell)):
            return (f"notebook {path} holds a table of data in cell {n}; tables leave a workspace only through "
                    f"an output request")
    return None


def read_refusal(path: str, kind: str, size: int, head: bytes | None, limits: BrowserLimits) -> str | None:
    """Why the browser may not be sent the content of ``path`` (``kind``: notebook, file), or None.

    ``head`` is the file's content (or its first bytes beyond the text limit) for text checks.
    """
    suffix = _suffix(path)
    if kind == "notebook":
        if size > limits.notebook_bytes:
            return f"notebook {path} is {size:,} bytes, over the {limits.notebook_bytes:,} bytes served"
        return _notebook_refusal(path, head) if head is not None else None
    if suffix in DATA_EXTENSIONS:
        return f"{path} is a data file ({suffix}); data leaves a workspace only through an output request"
    if suffix in IMAGE_EXTENSIONS:
        if size > limits.image_bytes:
            return f"image {path} is {size:,} bytes, over the {limits.image_bytes:,} bytes served"
        return None
    if head is not None and b"\0" in head[:8192]:
        return f"{path} is a binary file; binary files are not served to the browser"
    text = None
    if head is not None:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return f"{path} is not UTF-8 text; binary files are not served to the browser"
    return _text_refusal(path, size, text, limits, "served to")


def write_refusal(path: str, kind: str, fmt: str | None, chunked: bool, content: str | None,
                  limits: BrowserLimits) -> str | None:
    """Why the browser may not write ``path`` with this contents-API model, or None.

    Saving notebooks, creating directories and editing small text files are allowed; an upload
    (base64 or chunked content) is refused, and so is a text file that is data.
    """
    if kind in ("notebook", "directory"):
        return None
    if chunked or fmt == "base64":
        return (f"uploading {path} is not allowed: files come into a workspace only through an import request "
                f"that a data steward approves (toisio imports request)")
    if _suffix(path) in DATA_EXTENSIONS:
        return f"{path} is a data file; data comes into a workspace only through an approved import request"
    text = content or ""
    return _text_refusal(path, len(text.encode()), text, limits, "accepted from")
