"""The whole pipeline on a small synthetic set: accounting, minimisation, keys, reproducibility, atomicity."""

import collections
import csv
import hashlib
import re

import pandas as pd
import pytest

from permits.scope import PermitScope
from pseudonymise import deliver
from pseudonymise.keys import derive_permit_key
from pseudonymise.pipeline import ExtractionError, run_extraction
from pseudonymise.pseudonym import key_frame, pseudonym_python, with_pseudonym
from tests.factories import make_scope, make_service
from toisio import audit
from toisio.keystore import master_key

pytestmark = [pytest.mark.slow, pytest.mark.integration]
HETU_RE = re.compile(rb"\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]")


@pytest.fixture(scope="module")
def service_home(tmp_path_factory):
    return tmp_path_factory.mktemp("svc")


@pytest.fixture(scope="module")
def delivered(spark, extracts, service_home, tmp_path_factory):
    svc = make_service(service_home)
    out = tmp_path_factory.mktemp("deliveries") / "TOISIO-2026-1"
    result = run_extraction(make_scope(), extracts, out, svc, spark=spark)
    return svc, result


def _files(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_row_is_accounted_for(delivered, extracts):
    _, result = delivered
    with open(extracts / "ground_truth.csv", encoding="utf-8") as fh:
        truth = collections.Counter((t["registry"], t["expected_reason"]) for t in csv.DictReader(fh))
    for registry, c in result.manifest.counts.items():
        assert c.rows_in == c.quarantined_total + c.excluded + c.delivered
        for reason, n in c.quarantined.items():
            if reason != "hetu_temporary":
                assert truth[(registry, reason)] == n, (registry, reason)
    assert result.quarantine_dir.exists() and (result.quarantine_dir / "summary.json").exists()


def test_manifest_matches_files(delivered):
    _, result = delivered
    for name, ds in result.manifest.datasets.items():
        assert ds.files, name
        for f in ds.files:
            assert deliver.sha256_file(result.output_dir / f.path) == f.sha256
        assert sum(f.rows for f in ds.files) == ds.rows
    assert (result.output_dir / "scope.json").exists()
    assert result.manifest.key.key_id.startswith("TOISIO-2026-1/v1/")


def test_only_scope_variables_and_periods_leave(delivered):
    _, result = delivered
    scope = make_scope()
    hilmo = pd.read_parquet(result.output_dir / "hilmo")
    assert list(hilmo.columns) == ["pseudonym", *scope.registries["hilmo"].variables]
    assert hilmo["admission_date"].min() >= pd.Timestamp("2005-01-01").date()
    assert hilmo["admission_date"].max() <= pd.Timestamp("2023-12-31").date()
    assert all(d.day == 1 for d in hilmo["admission_date"])  # generalised to month
    persons = pd.read_parquet(result.output_dir / "persons")
    assert "municipality" not in persons.columns and persons["wellbeing_county"].notna().any()
    assert set(persons["age_band"].dropna()) <= {"0-39", "40-59", "60-79", "80+"}
    assert not (result.output_dir / "population").exists()


def test_no_identity_codes_or_keys_in_the_delivery(delivered, service_home):
    svc, result = delivered
    key = derive_permit_key(master_key(svc.settings.keys), "TOISIO-2026-1")
    for path in result.output_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not HETU_RE.search(data), path
            assert key.secret.value not in data and key.secret.value.hex().encode() not in data


def test_cohort_controls_match_their_case(delivered):
    _, result = delivered
    persons = pd.read_parquet(result.output_dir / "persons")
    cases = persons[persons["cohort_role"] == "case"].set_index("pseudonym")
    controls = persons[persons["cohort_role"] == "control"]
    assert len(cases) > 0 and len(controls) > 0
    joined = controls.join(cases, on="match_set", rsuffix="_case", how="inner")
    assert len(joined) == len(controls)
    assert (joined["sex"] == joined["sex_case"]).all()
    birth_years = joined["birth_date"].map(lambda d: d.year)
    assert (birth_years == joined["birth_date_case"].map(lambda d: d.year)).all()
    assert result.manifest.cohort.controls == len(controls)
    # a control is alive at its case's index date (dates are coarsened to months in this scope)
    dead = controls[controls["death_date"].notna()]
    assert len(dead) > 0 and (dead["death_date"] >= dead["index_date"]).all()


def test_rerun_is_byte_identical_and_audited(delivered, spark, extracts, tmp_path):
    svc, first = delivered
    again = run_extraction(make_scope(), extracts, tmp_path / "again", svc, spark=spark)
    assert _files(first.output_dir) == _files(again.output_dir)
    with svc.engine.connect() as conn:
        assert audit.verify(conn, svc.audit_key).ok
        actions = [e.action for e in audit.events(conn, subject="permit:TOISIO-2026-1")]
    assert actions.count("extraction.started") == 2 and actions.count("extraction.delivered") == 2


def test_other_permit_gets_unlinkable_pseudonyms(delivered, spark, extracts, tmp_path):
    svc, first = delivered
    other = make_scope(permit_id="TOISIO-2026-2", cohort=None, generalise={},
                       registries={"hilmo": {"variables": ["main_dg"]}})
    result = run_extraction(other, extracts, tmp_path / "other", svc, spark=spark)
    a = set(pd.read_parquet(first.output_dir / "hilmo")["pseudonym"])
    b = set(pd.read_parquet(result.output_dir / "hilmo")["pseudonym"])
    assert a and b and not (a & b)


def test_failed_run_leaves_previous_delivery(delivered, spark, extracts, monkeypatch):
    svc, first = delivered
    before = _files(first.output_dir)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(deliver, "write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        run_extraction(make_scope(), extracts, first.output_dir, svc, spark=spark)
    assert _files(first.output_dir) == before
    assert not [p for p in first.output_dir.parent.iterdir() if ".staging-" in p.name]
    with svc.engine.connect() as conn:
        last = audit.events(conn, subject="permit:TOISIO-2026-1")[-1]
    assert last.action == "extraction.failed" and "disk full" in last.payload["error"]


def test_missing_extract_is_a_clear_error(spark, tmp_path):
    svc = make_service(tmp_path / "home")
    (tmp_path / "in").mkdir()
    with pytest.raises(ExtractionError, match="extract file .*hilmo.csv is missing"):
        run_extraction(make_scope(), tmp_path / "in", tmp_path / "out", svc, spark=spark)
    assert not (tmp_path / "out").exists()


def test_spark_hmac_equals_python_and_key_stays_out_of_plan(spark, tmp_path, capfd):
    svc = make_service(tmp_path / "home")
    key = derive_permit_key(master_key(svc.settings.keys), "TOISIO-2026-9")
    codes = ["131052-308T", "010101-123N", "100190Y999P", "ÄÖ-non-ascii"]
    df = spark.createDataFrame([(c,) for c in codes], "hetu string")
    out = with_pseudonym(df, key_frame(spark, key))
    got = {r["hetu"]: r["pseudonym"] for r in out.collect()}
    assert got == {c: pseudonym_python(key, c) for c in codes}
    out.explain(mode="extended")
    plan = capfd.readouterr().out
    assert "pseudonym" in plan
    assert key.secret.value.hex() not in plan.lower()
    assert key.secret.value.hex().upper() not in plan
    assert repr(key.secret.value) not in plan


def test_scope_is_the_frozen_document(delivered):
    _, result = delivered
    scope = PermitScope.model_validate_json((result.output_dir / "scope.json").read_text())
    assert scope.sha256 == result.manifest.scope_sha256 == make_scope().sha256


def _quarantine_rows(result):
    frames = {p.name: pd.read_parquet(p) for p in sorted(result.quarantine_dir.iterdir()) if p.is_dir()}
    return {name: (sorted(df.columns), sorted(map(tuple, df.astype(str).values.tolist())))
            for name, df in frames.items()}


@pytest.mark.parametrize("cohort", [True, False], ids=["cohort", "no-cohort"])
def test_flagging_at_validation_changes_nothing_delivered(spark, extracts, tmp_path, monkeypatch, cohort):
    """Registries flagged while validated (period and cohort set in the same pass) give the same
    files, counts and quarantine as when every registry is validated first and delivered after."""
    from pseudonymise import pipeline

    scope = make_scope() if cohort else make_scope(cohort=None, generalise={})
    assert any(pipeline.flagged_at_validation(r, scope) for r in scope.registries)
    svc = make_service(tmp_path / "home")
    fast = run_extraction(scope, extracts, tmp_path / "fast", svc, spark=spark)
    monkeypatch.setattr(pipeline, "flagged_at_validation", lambda registry, scope: False)
    slow = run_extraction(scope, extracts, tmp_path / "slow", svc, spark=spark)
    assert fast.manifest == slow.manifest
    assert _files(fast.output_dir) == _files(slow.output_dir)
    assert _quarantine_rows(fast) == _quarantine_rows(slow)
    assert sum(c.quarantined.get("duplicate", 0) for c in fast.manifest.counts.values()) > 0


def test_a_run_leaves_nothing_cached(delivered, spark):
    """The cohort and the person table are cached during a run and released at its end, so a
    long-lived service process does not accumulate them."""
    assert spark._jsparkSession.sharedState().cacheManager().isEmpty()
