"""The benchmark's DuckDB peer does the pipeline's work: real HMAC-SHA256 pseudonyms and the same quarantine
reasons (else its timings would compare unlike work)."""

import collections
import csv
import hashlib
import hmac
from pathlib import Path

import duckdb
import pytest

from bench import duckdb_reference as duck
from catalogue.registries import CSV_REGISTRIES, load_schema
from permits.scope import load_scope

pytestmark = pytest.mark.unit


def test_hmac_from_sha256_on_blobs_is_hmac():
    key = hashlib.sha256(b"bench key").digest()
    ipad, opad = duck.hmac_pads(key)
    con = duckdb.connect()
    codes = ["131052-308T", "010101A123N", "ä-not-ascii"]
    got = [con.execute(f"SELECT {duck.pseudonym_sql('$code')}", {"code": c, "ipad": ipad, "opad": opad})
           .fetchone()[0] for c in codes]
    assert got == [hmac.new(key, c.encode(), hashlib.sha256).hexdigest()[:32] for c in codes]


def _truth(extracts) -> dict[str, dict[str, int]]:
    with open(extracts / "ground_truth.csv", encoding="utf-8") as fh:
        truth = collections.Counter((t["registry"], t["expected_reason"]) for t in csv.DictReader(fh)
                                    if t["registry"] in CSV_REGISTRIES)
    return {registry: {r: n for (reg, r), n in truth.items() if reg == registry} for registry in CSV_REGISTRIES}


def _without_temporary(counts: dict[str, int]) -> dict[str, int]:
    return {r: n for r, n in counts.items() if r != "hetu_temporary"}


def test_quarantine_counts_match_the_ground_truth(extracts, tmp_path):
    seconds, counts = duck.checks_only(extracts, list(CSV_REGISTRIES), allow_temporary=False, threads=2,
                                       temp=tmp_path, duplicates=True)
    assert seconds > 0
    truth = _truth(extracts)
    for registry in CSV_REGISTRIES:
        assert _without_temporary(counts[registry]) == truth[registry], registry
    _seconds, floor = duck.checks_only(extracts, list(CSV_REGISTRIES), allow_temporary=False, threads=2,
                                       temp=tmp_path)
    assert floor["kela_purchases"] == {r: n for r, n in counts["kela_purchases"].items() if r != "duplicate"}


def test_the_whole_work_quarantines_as_the_ground_truth_and_hashes_what_leaves(extracts, tmp_path):
    scope = load_scope(Path(duck.__file__).with_name("scope-bench.yaml"))
    key = hashlib.sha256(b"bench key").digest()
    result = duck.run(scope, extracts, tmp_path / "out", key, threads=2)
    truth = _truth(extracts)
    for registry in result["quarantined"]:
        assert _without_temporary(result["quarantined"][registry]) == truth[registry], registry
    quarantined = duckdb.connect().execute(
        f"SELECT _reason, _detail, line FROM read_parquet('{tmp_path}/out/quarantine/hilmo.parquet')").fetchall()
    assert len(quarantined) == sum(result["quarantined"]["hilmo"].values())
    assert all(reason and detail and line for reason, detail, line in quarantined)
    assert all(result["delivered"][r] > 0 for r in scope.registries)
    con = duckdb.connect()
    persons = con.execute(f"SELECT pseudonym FROM read_parquet('{tmp_path}/out/population.parquet')").fetchall()
    with open(extracts / "population.csv", encoding="utf-8") as fh:
        codes = {line.split(load_schema("population").delimiter)[0].strip().upper() for line in fh}
    pseudonyms = {hmac.new(key, c.encode(), hashlib.sha256).hexdigest()[:32] for c in codes}
    assert {p for (p,) in persons} <= pseudonyms
