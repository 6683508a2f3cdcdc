"""The benchmark's DuckDB peer does the pipeline's work: real HMAC-SHA256 pseudonyms and the same quarantine
reasons (else its timings would compare unlike work)."""

import collections
import csv
import hashlib
import hmac

import duckdb
import pytest

from bench import duckdb_reference as duck
from catalogue.registries import CSV_REGISTRIES

pytestmark = pytest.mark.unit


def test_hmac_from_sha256_on_blobs_is_hmac():
    key = hashlib.sha256(b"bench key").digest()
    ipad, opad = duck.hmac_pads(key)
    con = duckdb.connect()
    codes = ["131052-308T", "010101A123N", "ä-not-ascii"]
    got = [con.execute(f"SELECT {duck.pseudonym_sql('$code')}", {"code": c, "ipad": ipad, "opad": opad})
           .fetchone()[0] for c in codes]
    assert got == [hmac.new(key, c.encode(), hashlib.sha256).hexdigest()[:32] for c in codes]


def test_quarantine_counts_match_the_ground_truth(extracts, tmp_path):
    seconds, counts = duck.checks_only(extracts, list(CSV_REGISTRIES), allow_temporary=False, threads=2,
                                       temp=tmp_path)
    assert seconds > 0
    with open(extracts / "ground_truth.csv", encoding="utf-8") as fh:
        truth = collections.Counter((t["registry"], t["expected_reason"]) for t in csv.DictReader(fh)
                                    if t["registry"] in CSV_REGISTRIES)
    for registry in CSV_REGISTRIES:
        got = dict(counts[registry])
        got.pop("hetu_temporary", None)
        assert got == {r: n for (reg, r), n in truth.items() if reg == registry}, registry
