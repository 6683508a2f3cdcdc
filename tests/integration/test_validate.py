"""Row validation in Spark: each defect kind is quarantined with the reason the ground truth names."""

import collections
import csv
import hashlib

import pytest

from catalogue.registries import CSV_REGISTRIES, load_schema
from pseudonymise import hetu as H
from pseudonymise.validate import REASONS, parse_and_validate, read_lines, validate_lines

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checked(spark, extracts):
    out = {}
    for name in CSV_REGISTRIES:
        schema = load_schema(name)
        df = validate_lines(read_lines(spark, str(extracts / schema.file), schema), schema)
        out[name] = df.where("_reason IS NOT NULL").select("_reason", "_detail", "_line", "hetu").collect()
    return out


def _truth(extracts):
    """The CSV registries' defects (the FHIR export's are tested in test_fhir.py)."""
    with open(extracts / "ground_truth.csv", encoding="utf-8") as fh:
        return [t for t in csv.DictReader(fh) if t["registry"] in CSV_REGISTRIES]


def _temporary_lines(extracts, schema):
    """Lines whose only fault is a temporary identity code (not injected defects)."""
    n = 0
    with open(extracts / schema.file, "rb") as fh:
        next(fh)
        for raw in fh:
            code = raw.split(schema.delimiter.encode())[0].decode("utf-8", "replace")
            if H.rejection_reason(code) == H.HETU_TEMPORARY:
                n += 1
    return n


def test_counts_per_reason_match_ground_truth(checked, extracts):
    truth = _truth(extracts)
    for name, rows in checked.items():
        got = collections.Counter(r["_reason"] for r in rows)
        expected = collections.Counter(t["expected_reason"] for t in truth if t["registry"] == name)
        temporary = got.pop(H.HETU_TEMPORARY, 0)
        assert got == expected, name
        assert temporary <= _temporary_lines(extracts, load_schema(name))


def test_every_defect_line_is_quarantined_with_its_reason(checked, extracts):
    for t in _truth(extracts):
        if t["defect"] == "wrong_encoding":
            continue  # the quarantined copy is made valid UTF-8, so it has another hash
        rows = checked[t["registry"]]
        hashes = {hashlib.sha256(r["_line"].encode("utf-8")).hexdigest(): r["_reason"] for r in rows}
        assert hashes.get(t["line_sha256"]) == t["expected_reason"], t


def test_every_reason_is_listed(checked):
    seen = {r["_reason"] for rows in checked.values() for r in rows}
    assert seen <= set(REASONS)


def test_details_name_the_column(checked):
    for rows in checked.values():
        for r in rows:
            assert r["_detail"], r
    hilmo = {r["_detail"] for r in checked["hilmo"] if r["_reason"] == "unknown_code"}
    assert hilmo == {"main_dg"}


@pytest.mark.parametrize(
    ("line", "reason", "detail"),
    [
        ("131052-308T,2019-01-01,2019-01-02,E119,,,10102", None, None),
        ("131052-308T,2019-01-01,2019-01-02,E1190,,,10102", None, None),  # Finnish 5th character
        ("131052-308T,2019-01-01,2019-01-02,E114+G632,,,10102", None, None),
        ("131052-308T,2019-01-01,2019-01-02,E114+U999,,,10102", "unknown_code", "main_dg"),
        ("131052-308T,2019-01-03,2019-01-02,E119,,,10102", "inconsistent_dates", "discharge_date"),
        ("131052-308T,2019-01-01,2019-01-02,E119,,XX,10102", "unknown_code", "procedure"),
        ("131052-308T,2019-01-01,2019-01-02,E119,,,10102,extra", "malformed_line", "expected 7 fields"),
        ("131052-308U,2019-01-01,2019-01-02,E119,,,10102", "hetu_checksum", "hetu"),
        (",2019-01-01,2019-01-02,E119,,,10102", "hetu_missing", "hetu"),
        ("131052-308T,,2019-01-02,E119,,,10102", "missing_required", "admission_date"),
        # quoted lines go through the CSV parser, unquoted ones are split: both trim and read "" as empty
        ('"131052-308T","2019-01-01","2019-01-02","E119","","","10102"', None, None),
        ("131052-308T, 2019-01-01 ,2019-01-02, e119 ,,,10102", None, None),
        ('131052-308T,2019-01-01,2019-01-02,E119,"E11,9",,10102', "unknown_code", "secondary_dg"),
        ('131052-308T,2019-01-01,2019-01-02,E119,"",,10102,"x"', "malformed_line", "expected 7 fields"),
        ("131052-308T,2019-01-01,2019-01-02,E119,,,10102,", "malformed_line", "expected 7 fields"),
        ("131052-308T,2019-01-01", "malformed_line", "expected 7 fields"),
        ("   ,2019-01-01,2019-01-02,E119,,,10102", "hetu_missing", "hetu"),
    ],
)
def test_single_lines(spark, line, reason, detail):
    schema = load_schema("hilmo")
    df = spark.createDataFrame([(line, "f")], "_line string, _file string")
    row = parse_and_validate(df, schema).collect()[0]
    assert (row["_reason"], row["_detail"]) == (reason, detail)


@pytest.mark.parametrize("registry", ["hilmo", "kela_purchases"])
def test_quoted_and_unquoted_lines_parse_alike(spark, extracts, registry):
    """Every line of an extract, with each field quoted, gives the same row as the line itself."""
    import io

    schema = load_schema(registry)
    with open(extracts / schema.file, encoding="utf-8", errors="replace") as fh:
        lines = [line.rstrip("\n") for line in fh][1:800]
    quoted = []
    for line in lines:
        buf = io.StringIO()
        csv.writer(buf, delimiter=schema.delimiter, quoting=csv.QUOTE_ALL, lineterminator="").writerow(
            line.split(schema.delimiter))
        quoted.append(buf.getvalue())
    assert all('"' not in line for line in lines) and all(q.startswith('"') for q in quoted)

    def parse(rows):  # _file carries the line number, so rows can be put back in order
        df = spark.createDataFrame([(r, f"{i:06d}") for i, r in enumerate(rows)], "_line string, _file string")
        return [tuple(r) for r in parse_and_validate(df, schema).drop("_line").orderBy("_file").collect()]

    assert parse(lines) == parse(quoted)


ISO_DATE_CASES = ["2020-01-01", "2020-02-29", "2021-02-29", "2000-02-29", "1900-02-29", "2020-1-01", "2020-01-1",
                  "2020-1-1", "20200-1-01", "2020-13-01", "2020-00-10", "2020-01-32", "2020-01-00", "0999-01-01",
                  "+020-01-01", "2020/01/01", "2020-01-01T00", "2020-01", "2020", "abcd-ef-gh", "2020-01-0a",
                  "\uff12020-01-01", "1899-12-31", "9999-12-31", ""]


def test_iso_dates_are_read_as_the_formatter_reads_them(spark):
    """The fast ISO path (a cast after a shape check) accepts exactly the dates ``try_to_date`` accepts."""
    from pyspark.sql import functions as F

    from pseudonymise.validate import ISO_DATE, _date

    df = spark.createDataFrame([(v,) for v in ISO_DATE_CASES], "v string")
    rows = df.select("v", _date(F.col("v"), ISO_DATE).alias("fast"),
                     F.try_to_date("v", ISO_DATE).alias("formatter")).collect()
    assert [r["fast"] for r in rows] == [r["formatter"] for r in rows]
    assert sum(r["fast"] is not None for r in rows) == 6  # the cases do include valid dates


def test_a_signed_year_is_not_an_iso_date(spark):
    from pyspark.sql import functions as F

    from pseudonymise.validate import ISO_DATE, _date

    df = spark.createDataFrame([("-2020-01-01",)], "v string")
    assert df.select(_date(F.col("v"), ISO_DATE).alias("d")).collect()[0]["d"] is None
