"""The identity code rules, on the Python side and as Spark expressions."""

import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.fi import hetu as stdnum_hetu

from pseudonymise import hetu as H

# (code, reason or None) - valid codes for every century sign, then each kind of fault.
TABLE = [
    ("131052-308T", None),
    ("010101-123N", None),
    ("211123A965F", H.HETU_TEMPORARY),
    ("010594Y1232", None),
    ("010594X1242", None),
    ("010594W1252", None),
    ("010594V1262", None),
    ("010594U1272", None),
    ("211123A965F", H.HETU_TEMPORARY),
    ("020304B1232", None),
    ("020304C1242", None),
    ("020304D1252", None),
    ("020304E1262", None),
    ("020304F1272", None),
    ("010190+1230", None),
    ("131052-308U", H.HETU_CHECKSUM),
    ("131052 308T", H.HETU_FORMAT),
    ("131052-30T", H.HETU_FORMAT),
    ("131052G308T", H.HETU_FORMAT),
    ("300252-308T", H.HETU_DATE),
    ("290200-1239", H.HETU_DATE),  # 1900 was not a leap year
    ("131352-308T", H.HETU_DATE),
    ("131052-001P", H.HETU_INDIVIDUAL),
    ("131052-900Y", H.HETU_TEMPORARY),
    ("", H.HETU_MISSING),
    (None, H.HETU_MISSING),
]


def _fix_checks(table):
    """Give the 'valid' rows a correct control character so the table tests the rules, not typos."""
    out = []
    for code, reason in table:
        if code and reason in (None, H.HETU_TEMPORARY, H.HETU_INDIVIDUAL) and len(code) == 11:
            code = code[:10] + H.control_character(code[:6], code[7:10])
        out.append((code, reason))
    return out


CASES = _fix_checks(TABLE)


@pytest.mark.parametrize(("code", "reason"), CASES)
def test_python_reason(code, reason):
    assert H.rejection_reason(code) == reason


@pytest.mark.parametrize(("code", "reason"), [c for c in CASES if c[0]])
def test_agrees_with_stdnum(code, reason):
    assert H.is_valid(code) == (reason is None) == stdnum_hetu.is_valid(code)
    assert H.is_valid(code, allow_temporary=True) == (reason in (None, H.HETU_TEMPORARY)) \
        == stdnum_hetu.is_valid(code, allow_temporary=True)


GOOD = "131052-308T"
#: A valid code with a character that only looks right: stdnum maps these to ASCII first and accepts the
#: code; a registry extract that holds one has a fault, and the service rejects it as a format fault.
LOOK_ALIKES = [
    GOOD.replace("-", "\u2212"),  # minus sign
    GOOD.replace("-", "\u2010"),  # hyphen
    "\uff11" + GOOD[1:],  # full-width digit one
    GOOD[:7] + "\u0663" + GOOD[8:],  # Arabic-Indic digit three
    "\u00a0" + GOOD,  # no-break space
    GOOD + "\u200b",  # zero-width space
    "\t" + GOOD,
    GOOD + "\n",
    GOOD + "\r\n",
]


@pytest.mark.parametrize("code", LOOK_ALIKES)
def test_a_look_alike_character_is_a_format_fault(code):
    assert H.rejection_reason(code) == H.HETU_FORMAT
    assert not H.is_valid(code, allow_temporary=True)
    with pytest.raises(ValueError, match="not an identity code"):
        H.birth_date(code)


def test_spaces_around_a_code_and_lower_case_are_accepted():
    assert H.rejection_reason("  " + GOOD.lower() + " ") is None
    assert H.normalise("  " + GOOD.lower() + " ") == GOOD


def test_every_century_sign_is_covered():
    signs = {c[6] for c, r in CASES if c and r is None or r == H.HETU_TEMPORARY}
    assert set(H.CENTURY_SIGNS) <= signs


def test_separator_distinguishes_persons():
    a = "100190-999P"
    b = "100190Y999P"
    assert H.normalise(a) != H.normalise(b)
    assert H.birth_date(a) == H.birth_date(b)


@given(st.text(alphabet="0123456789-+ABCDEFUVWXYHJKLMNPRST", min_size=10, max_size=12))
@settings(max_examples=300, deadline=None)
def test_reason_agrees_with_stdnum_on_random_strings(code):
    assert (H.rejection_reason(code) is None) == H.is_valid(code) == stdnum_hetu.is_valid(code)


@pytest.mark.slow
@pytest.mark.parametrize("implementation", ["java", "catalyst"])
def test_spark_expression_matches_python(spark, monkeypatch, implementation):
    """The Java function and the Catalyst expressions (where the jar is not built) give Python's reasons."""
    import random

    from pseudonymise import jvm_functions
    from pseudonymise.validate import with_hetu_reason

    if implementation == "java":
        if not jvm_functions.available(spark):
            _skip_or_fail_without_the_jar()
    else:
        monkeypatch.setattr(jvm_functions, "available", lambda session: False)

    rnd = random.Random(5)
    codes = [c for c, _ in CASES]
    alphabet = "0123456789-+ABCDEFUVWXYHJKLMNPRST"
    codes += ["".join(rnd.choice(alphabet) for _ in range(11)) for _ in range(300)]
    for _ in range(300):
        d, m, y, n = rnd.randint(1, 31), rnd.randint(1, 12), rnd.randint(0, 99), rnd.randint(0, 999)
        stem = f"{d:02d}{m:02d}{y:02d}"
        codes.append(f"{stem}{rnd.choice('-+AYF')}{n:03d}{H.control_character(stem, f'{n:03d}')}")
    # leap years in every century: 2000 and 2004 are leap years, 1900 and 1800 are not
    for stem in ("290200", "290204", "290100", "290196", "290197", "300200", "310400", "311200", "000100"):
        for sign in "+-YA":
            codes.append(f"{stem}{sign}123{H.control_character(stem, '123')}")
    codes += [None, "", "  ", " 010190-123L ", "010190-123l", "010190-9001", "010190-1230", *LOOK_ALIKES]
    df = spark.createDataFrame([(i, c) for i, c in enumerate(codes)], "i int, code string")
    for allow in (False, True):
        rows = with_hetu_reason(df, "code", allow_temporary=allow, out="r").orderBy("i").collect()
        assert [r["r"] for r in rows] == [H.rejection_reason(c, allow_temporary=allow) for c in codes]
        assert [r["code"] for r in rows] == codes  # the input is left as it was


def _skip_or_fail_without_the_jar():
    from pseudonymise import jvm_functions

    if jvm_functions.required() or shutil.which("javac"):  # make builds it wherever a JDK is installed
        pytest.fail(f"the Java functions are not registered in the test session ({jvm_functions.JAR})")
    pytest.skip("no JDK on this machine: the pipeline's Java functions are not built")


@pytest.mark.slow
@pytest.mark.parametrize("implementation", ["java", "catalyst"])
def test_spark_rejects_a_code_with_a_line_break_or_tab_around_it(spark, monkeypatch, implementation):
    """Spark trims spaces only: a code with a line break, a tab or a no-break space left around it is not
    eleven characters and is quarantined as a format fault (never delivered with the break in its key)."""
    from pseudonymise import jvm_functions
    from pseudonymise.validate import with_hetu_reason

    if implementation == "java":
        if not jvm_functions.available(spark):
            _skip_or_fail_without_the_jar()
    else:
        monkeypatch.setattr(jvm_functions, "available", lambda session: False)
    good = "131052-308T"
    codes = [good + "\n", "\t" + good, good + "\u00a0", " " + good + " "]
    df = spark.createDataFrame([(i, c) for i, c in enumerate(codes)], "i int, code string")
    rows = with_hetu_reason(df, "code", allow_temporary=False, out="r", normalised="n").orderBy("i").collect()
    assert [r["r"] for r in rows] == [H.HETU_FORMAT] * 3 + [None]
    assert rows[3]["n"] == good


@pytest.mark.slow
def test_the_java_functions_are_built_and_registered_where_a_jdk_is(spark):
    from pseudonymise import jvm_functions

    if not (jvm_functions.required() or shutil.which("javac")):
        pytest.skip("no JDK on this machine: the pipeline's Java functions are not built")
    assert jvm_functions.built_jar() == jvm_functions.JAR
    assert jvm_functions.available(spark)
    plan = spark.range(1).selectExpr(f"{jvm_functions.HETU_REASON}('131052-308T', false) AS r")
    assert plan.collect()[0]["r"] is None
