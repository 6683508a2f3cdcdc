"""The pipeline's Java functions give what the Spark expressions they replace give, value for value."""

import random

import pytest

pytestmark = pytest.mark.slow


def _require_functions(spark):
    import shutil

    from pseudonymise import jvm_functions

    if not jvm_functions.available(spark):
        if jvm_functions.required() or shutil.which("javac"):  # make builds the jar wherever a JDK is installed
            pytest.fail(f"the Java functions are not registered in the test session ({jvm_functions.JAR})")
        pytest.skip("no JDK on this machine: the pipeline's Java functions are not built")


def _dotted_dates() -> list[str | None]:
    rnd = random.Random(17)
    values: list[str | None] = [
        None, "", "1.2.2020", "01.02.2020", "1.02.2020", "31.12.1999", "29.2.2000", "29.2.1900", "29.2.2004",
        "29.2.2003", "31.4.2020", "30.4.2020", "0.1.2020", "1.0.2020", "1.13.2020", "32.1.2020", "1.1.999",
        "1.1.0999", "1.1.1000", "1.1.9999", "1.1.12345", "001.1.2020", "1.001.2020", "1.1.02020", "1.1.20",
        "1..2020", ".1.2020", "1.1.", "1.1.2020.", " 1.1.2020", "1.1.2020 ", "1,1,2020", "1-1-2020",
        "2020-01-01", "+1.1.2020", "1.+1.2020", "1.1.+2020", "1.1.-2020", "١.١.٢٠٢٠", "1.1.2O20", "a.b.cdef",
        "31.1.1970", "1.1.1970", "31.12.1969", "28.2.1582", "15.10.1582", "4.10.1582", "1.1.1600",
    ]
    alphabet = "0123456789..."
    values += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(3, 11))) for _ in range(2000)]
    for _ in range(1000):
        d, m, y = rnd.randint(0, 32), rnd.randint(0, 13), rnd.randint(990, 10010)
        values.append(f"{d:0{rnd.randint(1, 2)}d}.{m:0{rnd.randint(1, 2)}d}.{y}")
    return values


def test_dotted_dates_are_what_sparks_parser_makes_of_them(spark, monkeypatch):
    from pyspark.sql import functions as F

    from pseudonymise import validate

    _require_functions(spark)
    values = _dotted_dates()
    df = spark.createDataFrame(list(enumerate(values)), "i int, v string")
    # compared as text: the parser makes some values into years before 1, which Python's dates cannot hold
    rows = df.select("i", validate._date(F.col("v"), validate.DOTTED_DATE, jvm=True).cast("string").alias("fast"),
                     F.try_to_date("v", validate.DOTTED_DATE).cast("string").alias("spark")).orderBy("i").collect()
    differing = [(values[r["i"]], r["fast"], r["spark"]) for r in rows if r["fast"] != r["spark"]]
    assert differing == []
    assert sum(r["fast"] is not None for r in rows) > 500  # the sample holds many real dates


def test_the_fast_path_takes_only_the_plain_shape(spark):
    """The Java function answers for the plain shape with a four-digit year from 1000 and leaves the rest
    (null) to Spark's parser: what it answers is the parser's date, what it leaves the parser decides."""
    from pyspark.sql import functions as F

    from pseudonymise import jvm_functions

    _require_functions(spark)
    values = ["1.2.2020", "01.02.2020", "29.2.2000", "29.2.1900", "1.1.999", "1.1.12345", "001.1.2020",
              "1.1.2020 ", "+1.1.2020"]
    df = spark.createDataFrame(list(enumerate(values)), "i int, v string")
    got = [r["d"] for r in df.select("i", F.date_from_unix_date(F.call_function(jvm_functions.DOTTED_DATE, "v"))
                                     .alias("d")).orderBy("i").collect()]
    import datetime as dt

    assert got == [dt.date(2020, 2, 1), dt.date(2020, 2, 1), dt.date(2000, 2, 29)] + [None] * 6


def test_the_build_compiles_every_source_into_the_jar(tmp_path, monkeypatch):
    import shutil
    import zipfile

    from pseudonymise import jvm_functions

    if shutil.which("javac") is None:
        if jvm_functions.required():
            pytest.fail("no javac where the Java functions are required")
        pytest.skip("no JDK on this machine")
    monkeypatch.setattr(jvm_functions, "JAR", tmp_path / "functions.jar")
    assert jvm_functions.build() == tmp_path / "functions.jar"
    names = set(zipfile.ZipFile(tmp_path / "functions.jar").namelist())
    classes = {cls.replace(".", "/") + ".class" for cls, _ in jvm_functions.FUNCTIONS.values()}
    assert classes <= names and "META-INF/MANIFEST.MF" in names
