"""The synthetic registry generator: determinism, valid identity codes, correlations, defects."""

import csv
import hashlib

import pandas as pd
import pytest

from catalogue.registries import CSV_REGISTRIES, load_schema
from pseudonymise import hetu as H
from pseudonymise.synthetic import generate


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    generate(out, persons=4000, seed=3)
    return out


def _digest(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_same_seed_same_bytes(tmp_path):
    generate(tmp_path / "a", persons=500, seed=9, defect_rate=0.05, chunk_size=200)
    generate(tmp_path / "b", persons=500, seed=9, defect_rate=0.05, chunk_size=200)
    generate(tmp_path / "c", persons=500, seed=10, defect_rate=0.05, chunk_size=200)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["population.csv"] != _digest(tmp_path / "c")["population.csv"]


def test_files_follow_their_schema(clean):
    for schema in map(load_schema, CSV_REGISTRIES):
        with open(clean / schema.file, encoding="utf-8") as fh:
            header = fh.readline().rstrip("\n")
        assert header == schema.header


def test_identity_codes_valid_unique_and_every_sign_used(clean):
    pop = pd.read_csv(clean / "population.csv", dtype=str)
    assert pop["hetu"].is_unique
    reasons = pop["hetu"].map(H.rejection_reason)
    assert set(reasons.dropna()) == {H.HETU_TEMPORARY}
    assert 0 < (reasons == H.HETU_TEMPORARY).sum() < 0.02 * len(pop)
    assert set(pop["hetu"].str[6]) == set(H.CENTURY_SIGNS)
    ok = pop[reasons.isna()]
    assert (ok["hetu"].map(H.sex).astype(str) == ok["sex"]).all()
    assert (ok["hetu"].map(lambda c: H.birth_date(c).isoformat()) == ok["birth_date"]).all()


def test_diabetes_goes_with_metformin(clean):
    hilmo = pd.read_csv(clean / "hilmo.csv", dtype=str)
    kela = pd.read_csv(clean / "kela_purchases.csv", sep=";", dtype=str)
    pop = pd.read_csv(clean / "population.csv", dtype=str)
    e11 = set(hilmo.loc[hilmo["main_dg"].str.startswith("E11"), "hetu"])
    metformin = set(kela.loc[kela["atc"] == "A10BA02", "hetu"])
    everyone = set(pop["hetu"])
    share_diabetic = len(e11 & metformin) / len(e11)
    share_other = len(metformin - e11) / len(everyone - e11)
    assert share_diabetic > 0.8 and share_other < 0.05


def test_deaths_consistent_with_population(clean):
    pop = pd.read_csv(clean / "population.csv", dtype=str, keep_default_na=False)
    cod = pd.read_csv(clean / "causes_of_death.csv", dtype=str)
    died = pop[pop["death_date"] != ""].set_index("hetu")["death_date"]
    assert set(cod["hetu"]) == set(died.index)
    assert (cod.set_index("hetu")["death_date"] == died.loc[cod["hetu"]]).all()


def test_kela_uses_semicolons_and_decimal_comma(clean):
    first = (clean / "kela_purchases.csv").read_text(encoding="utf-8").splitlines()[1]
    fields = first.split(";")
    assert len(fields) == 8 and "," in fields[5]


def test_defects_recorded_in_ground_truth(tmp_path):
    s = generate(tmp_path, persons=1500, seed=4, defect_rate=0.03)
    with open(tmp_path / "ground_truth.csv", encoding="utf-8") as fh:
        truth = list(csv.DictReader(fh))
    assert len(truth) == sum(s.defects.values()) > 0
    assert {t["defect"] for t in truth} == {"bad_control_char", "impossible_date", "unknown_code",
                                            "missing_required", "duplicate_row", "truncated_line",
                                            "wrong_encoding"}
    raw = (tmp_path / "avohilmo.csv").read_bytes()
    bad = [t for t in truth if t["defect"] == "wrong_encoding"]
    lines = {hashlib.sha256(line).hexdigest(): line for line in raw.split(b"\n")}
    for t in bad:
        with pytest.raises(UnicodeDecodeError):
            lines[t["line_sha256"]].decode("utf-8")


def test_births_spread_to_the_window_end_without_a_pile_on_one_day():
    """Born after the last birth day used to be moved onto it: at 5.6M persons that one date ran out of codes."""
    import numpy as np

    from pseudonymise import synthetic as S

    _old, birth = S._births(np.random.default_rng(7), 400_000)
    assert birth.max() <= S.LAST_BIRTH
    days, per_day = np.unique(birth, return_counts=True)
    assert per_day.max() < 12 * per_day.mean()
    december_2024 = (np.datetime64("2024-12-01", "D") - S.EPOCH).astype(int)
    assert (birth >= december_2024).sum() == (birth == december_2024).sum()  # nothing after the last day


def test_a_population_sized_day_of_births_gets_unique_codes():
    """The allocator gives 449 codes per birth day, sex and century sign; a population peaks well under that."""
    import numpy as np

    from pseudonymise import synthetic as S

    alloc = S._HetuAllocator(np.random.default_rng(1))
    n = 440
    codes = alloc.allocate(np.full(n, 100), np.full(n, "-"), np.ones(n, dtype=int), np.zeros(n, dtype=bool))
    assert len(set(codes)) == n and all(c % 2 == 1 for c in codes)
