"""The rules on what a workspace's browser may read and write (pure functions, no server)."""

import json

import pytest

from secure_env.workspace.browser_rules import (
    DATA_EXTENSIONS,
    BrowserLimits,
    looks_tabular,
    read_refusal,
    write_refusal,
)

L = BrowserLimits(text_bytes=1000, image_bytes=2000, notebook_bytes=5000)
TABLE = "".join(f"{i};{i * 2};x\n" for i in range(12))


@pytest.mark.parametrize("ext", sorted(DATA_EXTENSIONS))
def test_every_data_format_is_refused_both_ways(ext):
    assert read_refusal(f"scratch/a{ext}", "file", 10, b"tiny", L)
    assert write_refusal(f"scratch/a{ext}", "file", "text", False, "tiny", L)


@pytest.mark.parametrize("text,tabular", [
    (TABLE, True), (TABLE.replace(";", "\t"), True), (TABLE.replace(";", ","), True),
    ("".join(f"| {i} | {i} |\n" for i in range(12)), True),
    ("\n".join(["one line, of prose"] * 5), False),  # too few lines to be a table
    ("import os\nx = f(a, b)\ny = 2\nz = g(1, 2, 3)\n" * 3, False),  # code: no constant delimiter count
    ("", False),
])
def test_looks_tabular(text, tabular):
    assert looks_tabular(text) is tabular


def test_text_is_served_when_small_and_not_a_table():
    assert read_refusal("notes.md", "file", 20, b"# notes\nall fine\n", L) is None
    assert read_refusal("notes.md", "file", 1001, b"x" * 1001, L)
    assert "table" in read_refusal("rows.txt", "file", len(TABLE), TABLE.encode(), L)
    assert "binary" in read_refusal("x.unknown", "file", 4, b"ab\0c", L)
    assert "UTF-8" in read_refusal("x.unknown", "file", 2, b"\xff\xfe", L)


def test_images_up_to_a_size_and_notebooks_without_tables():
    assert read_refusal("fig.png", "file", 1999, None, L) is None
    assert read_refusal("fig.png", "file", 2001, None, L)
    nb = {"cells": [{"cell_type": "code", "source": "df.head()", "outputs": [
        {"output_type": "stream", "text": TABLE}]}]}
    assert "cell 1" in read_refusal("a.ipynb", "notebook", 100, json.dumps(nb).encode(), L)
    nb["cells"][0]["outputs"] = [{"output_type": "execute_result", "data": {"text/plain": "42"}}]
    assert read_refusal("a.ipynb", "notebook", 100, json.dumps(nb).encode(), L) is None
    assert read_refusal("a.ipynb", "notebook", 5001, None, L)


def test_uploads_are_refused_saving_is_not():
    assert "import request" in write_refusal("a.py", "file", "base64", False, None, L)
    assert write_refusal("a.py", "file", "text", True, "x", L)  # chunked upload
    assert write_refusal("a.ipynb", "notebook", "json", False, None, L) is None
    assert write_refusal("dir", "directory", None, False, None, L) is None
    assert write_refusal("a.py", "file", "text", False, "print(1)\n", L) is None
    assert write_refusal("a.txt", "file", "text", False, TABLE, L)
    assert write_refusal("a.txt", "file", "text", False, "x" * 1001, L)
