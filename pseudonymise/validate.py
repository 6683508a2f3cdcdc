"""Row validation as native Spark expressions (no Python UDFs).

:func:`parse_and_validate` turns the raw lines of one registry extract into
string fields plus a ``_reason`` column: ``None`` for a valid row, otherwise the
first rule it breaks (in the order of :data:`REASONS`) and ``_detail`` naming
the column.  Valid rows get typed columns; rejected rows keep their raw line so
they can be quarantined and reported back to the controller.
"""

from __future__ import annotations

import re

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from catalogue.codes import CODE_SYSTEMS, COMBINATION_JOINERS, icd10_codes, table_codes
from catalogue.registries import Column as SchemaColumn
from catalogue.registries import RegistrySchema
from pseudonymise import hetu as H
from pseudonymise import jvm_functions

# Quarantine reasons, in the order rules are checked (a row gets the first one it breaks).
REASONS: tuple[str, ...] = (
    "encoding",
    "malformed_line",
    "invalid_json",  # FHIR sources (pseudonymise.fhir): not one JSON object of the resource's shape
    "wrong_resource_type",
    "unresolved_reference",  # the subject leads to no Patient of the export
    H.HETU_MISSING,
    H.HETU_FORMAT,
    H.HETU_DATE,
    H.HETU_INDIVIDUAL,
    H.HETU_CHECKSUM,
    H.HETU_TEMPORARY,
    "missing_required",
    "invalid_date",
    "invalid_number",
    "unknown_code",
    "invalid_reference",  # a reference column that is not <Type>/<id> of its target type
    "inconsistent_dates",
    "duplicate",
)

_CENTURY_1900 = [s for s, c in H.CENTURY_SIGNS.items() if c == 1900]
_CENTURY_2000 = [s for s, c in H.CENTURY_SIGNS.items() if c == 2000]


def hetu_normalised(col: Column) -> Column:
    """Upper-cased, trimmed identity code (the century sign is kept)."""
    return F.upper(F.trim(col))


_SIMPLE_FORMAT = r"^[0-9]{6}[-+A-FU-Y][0-9]{3}[0-9A-Y]\z"  # H.FORMAT without its groups; \z: no newline after
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def with_hetu_reason(df: DataFrame, col: str, *, allow_temporary: bool, out: str = "_hetu_reason",
                     normalised: str | None = None) -> DataFrame:
    """Add ``out``: the HETU rejection reason for column ``col`` (names and order as :func:`hetu.rejection_reason`).

    With ``normalised``, the normalised code computed on the way is kept under that name.

    The code is cut into its parts in one projection and the rules read the parts in the next, so
    each part is computed once per row; written as one expression, Spark re-evaluated the
    normalised code and its substrings in every branch (about twice the cost).  Dates are checked
    by arithmetic (days in the month, leap years) rather than by building a date.

    Where the session has the pipeline's Java functions (:mod:`pseudonymise.jvm_functions`), the same rules
    run as one of them, about twenty times cheaper a row; the tests hold the two to the same answers.
    """
    normalised_code = df.select("*", hetu_normalised(F.col(col)).alias("_hn"))
    if jvm_functions.available(df.sparkSession):
        reason = F.call_function(jvm_functions.HETU_REASON, F.col("_hn"), F.lit(allow_temporary))
        done = normalised_code.select("*", reason.alias(out))
        return done.withColumnRenamed("_hn", normalised) if normalised else done.drop("_hn")
    h = F.col("_hn")
    sign = F.substring(h, 7, 1)
    parts = normalised_code.select(
        "*",
        h.rlike(_SIMPLE_FORMAT).alias("_h_format"),
        F.when(sign == "+", F.lit(1800)).when(sign.isin(_CENTURY_1900), F.lit(1900))
        .when(sign.isin(_CENTURY_2000), F.lit(2000)).alias("_h_century"),
        F.substring(h, 1, 2).try_cast("int").alias("_h_dd"),
        F.substring(h, 3, 2).try_cast("int").alias("_h_mm"),
        F.substring(h, 5, 2).try_cast("int").alias("_h_yy"),
        F.substring(h, 8, 3).try_cast("int").alias("_h_nnn"),
        F.substring(h, 11, 1).alias("_h_check"),
    )
    dd, mm, yy, nnn = F.col("_h_dd"), F.col("_h_mm"), F.col("_h_yy"), F.col("_h_nnn")
    year = F.col("_h_century") + yy
    leap = ((year % 4) == 0) & (((year % 100) != 0) | ((year % 400) == 0))
    month_ok = (mm >= 1) & (mm <= 12)
    days = F.element_at(F.array(*[F.lit(d) for d in _MONTH_DAYS]), F.when(month_ok, mm).otherwise(F.lit(1)))
    last_day = days + F.when((mm == 2) & leap, F.lit(1)).otherwise(F.lit(0))
    date_ok = month_ok & (dd >= 1) & (dd <= last_day)
    number = ((dd * 100 + mm) * 100 + yy).cast("long") * 1000 + nnn
    expected = F.element_at(F.array(*[F.lit(c) for c in H.CHECK_ALPHABET]), (number % 31 + 1).cast("int"))
    reason = (
        F.when(h.isNull() | (h == ""), F.lit(H.HETU_MISSING))
        .when(~F.col("_h_format"), F.lit(H.HETU_FORMAT))
        .when(~date_ok, F.lit(H.HETU_DATE))
        .when(nnn < 2, F.lit(H.HETU_INDIVIDUAL))
        .when(F.col("_h_check") != expected, F.lit(H.HETU_CHECKSUM))
    )
    if not allow_temporary:
        reason = reason.when(nnn >= 900, F.lit(H.HETU_TEMPORARY))
    helpers = ["_h_format", "_h_century", "_h_dd", "_h_mm", "_h_yy", "_h_nnn", "_h_check"]
    done = parts.select("*", reason.alias(out)).drop(*helpers)
    return done.withColumnRenamed("_hn", normalised) if normalised else done.drop("_hn")




def icd10_parts(code: Column) -> tuple[Column, Column]:
    """The first and (for combination codes) second part of a Finnish ICD-10 code.

    Meant for codes of the right shape (checked apart): the joiners become one and the parts are
    cut around it with plain string functions, several times cheaper than regular expressions.
    """
    others = COMBINATION_JOINERS.replace("*", "")
    unified = F.translate(code, others, "*" * len(others))
    first = F.substring_index(unified, "*", 1)
    second = F.when(F.instr(unified, "*") > 0, F.substring_index(unified, "*", -1))
    return first, second


def icd10_lookup_key(part: Column) -> Column:
    """The WHO code a part is looked up by: a Finnish 5th-character extension drops to its stem."""
    return F.when(F.length(part) == 5, F.substring(part, 1, 4)).otherwise(part)


def code_ok(system: str, code: Column) -> Column:
    """True where ``code`` is accepted by code system ``system`` (ICD-10 membership is a join)."""
    cs = CODE_SYSTEMS[system]
    ok = code.rlike(cs.pattern)
    table = table_codes(system)
    if table:
        ok = ok & code.isin(sorted(table))
    return ok


def _with_icd10_membership(df: DataFrame, columns: list[str], codes: DataFrame) -> DataFrame:
    """Add ``_icdok_<col>``: every part of the ICD-10 code in ``<col>`` is a WHO code.

    Membership uses a broadcast join against the code list rather than a 12,000-literal IN list,
    which would make the plan huge and slow to compile.
    """
    for c in columns:
        df = df.withColumn(f"_v_{c}", F.upper(F.col(f"_raw_{c}")))
        value = F.col(f"_v_{c}")
        first, second = icd10_parts(value)
        df = df.withColumn(f"_k1_{c}", icd10_lookup_key(first)).withColumn(f"_k2_{c}", icd10_lookup_key(second))
        for k in ("1", "2"):
            hit = codes.select(F.col("code").alias(f"_hit{k}_{c}"))
            df = df.join(F.broadcast(hit), F.col(f"_k{k}_{c}") == F.col(f"_hit{k}_{c}"), "left")
        shape = value.rlike(CODE_SYSTEMS["icd10"].pattern)
        ok = shape & F.col(f"_hit1_{c}").isNotNull() & (F.col(f"_k2_{c}").isNull() | F.col(f"_hit2_{c}").isNotNull())
        df = df.withColumn(f"_icdok_{c}", ok).drop(f"_v_{c}", f"_k1_{c}", f"_k2_{c}", f"_hit1_{c}", f"_hit2_{c}")
    return df


def _column_code_ok(c: SchemaColumn, value: Column, fields: dict[str, Column]) -> Column:
    systems = (c.code_system or "").split("|")

    def one(system: str) -> Column:
        return F.col(f"_icdok_{c.name}") if system == "icd10" else code_ok(system, value)

    if c.system_column is None:
        return one(systems[0])
    selector = fields[c.system_column]
    expr = None
    for system in systems:
        cond = (F.upper(F.trim(selector)) == system.upper()) & one(system)
        expr = cond if expr is None else (expr | cond)
    return expr


ISO_DATE = "yyyy-MM-dd"
DOTTED_DATE = "d.M.yyyy"  # Kela's


FHIR_DATE = "fhir"
#: A FHIR R4 date or dateTime with at least a whole date; a time needs its zone (hl7.org/fhir/R4/datatypes.html).
FHIR_DATE_TIME = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
                  r"(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?$")


def _date(value: Column, fmt: str, *, jvm: bool = False) -> Column:
    """``value`` as a date in format ``fmt``, null if it is not one.

    ISO dates (exactly ``yyyy-MM-dd``: ten characters, dashes in place) are cast, which Spark parses
    itself several times faster than through a ``java.time`` formatter; other formats use the formatter.
    A FHIR date or dateTime gives its date as written (the local date of its zone); a partial date
    (``2019-03``) is not a date here.
    """
    if fmt == FHIR_DATE:
        return F.when(value.rlike(FHIR_DATE_TIME), F.substring(value, 1, 10).try_cast("date"))
    if fmt == ISO_DATE:
        shape = (F.length(value) == 10) & (F.substring(value, 5, 1) == "-") & (F.substring(value, 8, 1) == "-")
        return F.when(shape, value.try_cast("date"))
    if fmt == DOTTED_DATE and jvm:
        # The Java fast path takes the plain shape (d.M.yyyy, a year from 1000); Spark's parser the rest.
        fast = F.date_from_unix_date(F.call_function(jvm_functions.DOTTED_DATE, value))
        return F.coalesce(fast, F.try_to_date(value, fmt))
    return F.try_to_date(value, fmt)


def _number(value: Column, kind: str, decimal_mark: str) -> Column:
    if kind == "int":
        return value.try_cast("long")
    v = F.replace(value, F.lit(decimal_mark), F.lit(".")) if decimal_mark != "." else value
    return v.try_cast("decimal(18,4)")


def _first(checks: list[tuple[Column, str, str]]) -> tuple[Column, Column]:
    """Chain ``(condition, reason, detail)`` into a reason and a detail column."""
    reason = None
    detail = None
    for cond, r, d in checks:
        reason = F.when(cond, F.lit(r)) if reason is None else reason.when(cond, F.lit(r))
        detail = F.when(cond, F.lit(d)) if detail is None else detail.when(cond, F.lit(d))
    return reason, detail


def read_lines(spark: SparkSession, path: str, schema: RegistrySchema) -> DataFrame:
    """Raw lines of an extract (header removed) with the file they came from."""
    df = spark.read.text(path)
    return (
        df.select(F.col("value").alias("_line"), F.input_file_name().alias("_file"))
        .where((F.col("_line") != F.lit(schema.header)) & (F.col("_line") != F.lit("\ufeff" + schema.header)))
    )


def _parse_fields(lines: DataFrame, schema: RegistrySchema) -> DataFrame:
    """Split each line into ``_raw_<column>`` strings (trimmed, empty as null), ``_tokens`` and ``_utf8``.

    ``_line`` becomes valid UTF-8 (invalid bytes replaced).  A line with no double quote is split
    on the delimiter; only a quoted line goes through the CSV parser, which is several times
    slower and gives the same fields for an unquoted line.
    """
    names = schema.names
    string_schema = StructType([StructField(n, StringType()) for n in names]).simpleString()
    delim = schema.delimiter
    line = F.col("_line")
    base = lines.select(
        F.is_valid_utf8(line).alias("_utf8"), "_file", line.alias("_bytes"),
    ).select(
        "_utf8", "_file",
        F.when(F.col("_utf8"), F.col("_bytes")).otherwise(F.make_valid_utf8(F.col("_bytes"))).alias("_line"),
    ).select("*", line.contains('"').alias("_quoted"))
    quoted = F.col("_quoted")
    split = base.select(
        "*",
        F.when(~quoted, F.split(line, re.escape(delim), -1)).alias("_parts"),
        F.when(quoted, F.from_csv(line, string_schema, {
            "sep": delim, "mode": "PERMISSIVE", "ignoreLeadingWhiteSpace": "true",
            "ignoreTrailingWhiteSpace": "true", "nullValue": ""})).alias("_csv"),
    )
    quoted_tokens = F.size(F.split(F.regexp_replace(line, '"[^"]*"', ""), re.escape(delim), -1))

    def field(i: int, name: str) -> Column:
        value = F.when(quoted, F.col(f"_csv.{name}")).otherwise(F.get(F.col("_parts"), i))
        return F.nullif(F.trim(value), F.lit(""))

    return split.select(
        "_line", "_file", "_utf8",
        F.when(quoted, quoted_tokens).otherwise(F.size("_parts")).alias("_tokens"),
        *[field(i, n).alias(f"_raw_{n}") for i, n in enumerate(names)],
    )


def parse_and_validate(lines: DataFrame, schema: RegistrySchema, *, allow_temporary: bool = False) -> DataFrame:
    """Parse raw lines and mark each row valid (``_reason`` null) or with its rejection reason.

    Output columns: ``hetu`` (normalised), one typed column per schema column, ``_reason``,
    ``_detail``, ``_line`` (raw line, made valid UTF-8) and ``_file``.
    """
    names = schema.names
    structure = [
        ("encoding", "line", ~F.col("_utf8")),
        ("malformed_line", f"expected {len(names)} fields", F.col("_tokens") != len(names)),
    ]
    return validate_fields(_parse_fields(lines, schema), schema, structure, allow_temporary=allow_temporary)


def validate_fields(parsed: DataFrame, schema: RegistrySchema, structure: list[tuple[str, str, Column]], *,
                    allow_temporary: bool = False) -> DataFrame:
    """The rules of the registry contract over parsed fields (``_raw_<column>`` texts, trimmed, empty as null).

    ``structure`` holds the layout's own rules ``(reason, detail, broken)`` (a CSV line's encoding and field
    count, a FHIR resource's JSON and type); every reason is one of :data:`REASONS`, and a row gets the first
    it breaks in that order.  Output as :func:`parse_and_validate`.
    """
    names = schema.names
    icd_columns = [c.name for c in schema.columns if c.type == "code" and "icd10" in (c.code_system or "")]
    if icd_columns:
        codes = parsed.sparkSession.createDataFrame([(c,) for c in sorted(icd10_codes())], "code string")
        parsed = _with_icd10_membership(parsed, icd_columns, codes)
    # Stage 1: the identity-code verdict once per row.
    stage1 = with_hetu_reason(parsed, "_raw_hetu", allow_temporary=allow_temporary, normalised="_hetu")
    raw = {n: F.col(f"_raw_{n}") for n in names}
    blank = {n: raw[n].isNull() for n in names}  # fields are trimmed and empty ones null
    date_format = FHIR_DATE if schema.format == "fhir_ndjson" else schema.date_format
    jvm = jvm_functions.available(parsed.sparkSession)
    typed: dict[str, Column] = {}
    for c in schema.columns[1:]:
        if c.type == "date":
            typed[c.name] = _date(raw[c.name], date_format, jvm=jvm)
        elif c.type in ("int", "decimal"):
            typed[c.name] = _number(raw[c.name], c.type, schema.decimal)
        elif c.type == "code":
            typed[c.name] = raw[c.name] if CODE_SYSTEMS[c.code_system.split("|")[0]].case_sensitive \
                else F.upper(raw[c.name])
        elif c.type == "reference":
            typed[c.name] = F.nullif(raw[c.name], F.lit(""))  # "" marks a value that is not a reference
        else:
            typed[c.name] = raw[c.name]
    # Stage 2: typed values and one boolean per rule, so the reason chain below only reads flags.
    checks: list[tuple[str, str, Column]] = list(structure)
    for r in (H.HETU_MISSING, H.HETU_FORMAT, H.HETU_DATE, H.HETU_INDIVIDUAL, H.HETU_CHECKSUM, H.HETU_TEMPORARY):
        checks.append((r, "hetu", F.coalesce(F.col("_hetu_reason") == r, F.lit(False))))
    for c in schema.columns[1:]:
        if not c.nullable:
            checks.append(("missing_required", c.name, blank[c.name]))
    for kind, reason in (("date", "invalid_date"), ("int", "invalid_number"), ("decimal", "invalid_number"),
                         ("reference", "invalid_reference")):
        for c in schema.columns[1:]:
            if c.type == kind:
                checks.append((reason, c.name, ~blank[c.name] & F.col(f"_typed_{c.name}").isNull()))
    for c in schema.columns[1:]:
        if c.type == "code":
            checks.append(("unknown_code", c.name,
                           ~blank[c.name] & ~F.coalesce(_column_code_ok(c, F.col(f"_typed_{c.name}"), raw),
                                                        F.lit(False))))
    if schema.event_date and schema.end_date:
        checks.append(("inconsistent_dates", schema.end_date,
                       F.coalesce(F.col(f"_typed_{schema.end_date}") < F.col(f"_typed_{schema.event_date}"),
                                  F.lit(False))))
    checks.sort(key=lambda chk: REASONS.index(chk[0]))
    stage2 = stage1.select(
        "*", *[typed[c].alias(f"_typed_{c}") for c in typed],
    )
    stage2 = stage2.select("*", *[cond.alias(f"_chk{i}") for i, (_, _, cond) in enumerate(checks)])
    reason, detail = _first([(F.col(f"_chk{i}"), r, d) for i, (r, d, _) in enumerate(checks)])
    out = stage2.select(
        F.col("_hetu").alias("hetu"),
        *[F.col(f"_typed_{c.name}").alias(c.name) for c in schema.columns[1:]],
        reason.alias("_reason"),
        detail.alias("_detail"),
        "_line",
        "_file",
    )
    return out


def line_key(line: Column) -> Column:
    """A 64-bit hash of a raw line, to find candidate duplicates cheaply.

    Only a candidate filter: rows sharing a key are then grouped by the line itself
    (:func:`mark_duplicates`), so a hash collision can never make two different lines duplicates.
    """
    return F.xxhash64(line).alias("_h")


def repeated_lines(lines: DataFrame) -> DataFrame:
    """Keys of raw lines that occur more than once.

    A window over the 64-bit keys (a sort, radix-sorted) rather than a hash aggregation: nearly
    every key is unique, so a partial aggregation only builds a large map that reduces nothing.
    """
    return (
        lines.select(line_key(F.col("_line")))
        .select("_h", F.count("*").over(Window.partitionBy("_h")).alias("_n"))
        .where(F.col("_n") > 1)
        .select("_h", F.lit(True).alias("_repeated"))
        .distinct()
    )


def with_repeated_flag(checked: DataFrame, lines: DataFrame) -> DataFrame:
    """Add ``_h`` (the line key) and ``_repeated`` (true where the key occurs more than once, else null)."""
    return checked.select("*", line_key(F.col("_line"))).join(F.broadcast(repeated_lines(lines)), "_h", "left")


def mark_duplicates(rows: DataFrame) -> DataFrame:
    """Among otherwise valid rows of one duplicate group, keep the first and mark the others ``duplicate``.

    Applied only to the (small) set of rows whose line occurs more than once.
    """
    w = Window.partitionBy("_line").orderBy("_file")
    dup = F.col("_reason").isNull() & (F.row_number().over(w) > 1)
    return (
        rows.withColumn("_detail", F.when(dup, F.lit("line")).otherwise(F.col("_detail")))
        .withColumn("_reason", F.when(dup, F.lit("duplicate")).otherwise(F.col("_reason")))
    )


def validate_lines(lines: DataFrame, schema: RegistrySchema, *, allow_temporary: bool = False) -> DataFrame:
    """:func:`parse_and_validate` plus duplicate marking, as one DataFrame (for small inputs and tests).

    The pipeline does the same in two steps through its work files, so that only the rows of
    repeated lines are ever shuffled.
    """
    keyed = with_repeated_flag(parse_and_validate(lines, schema, allow_temporary=allow_temporary), lines)
    repeated = F.coalesce(F.col("_repeated"), F.lit(False))
    single = keyed.where(~repeated)
    groups = mark_duplicates(keyed.where(repeated))
    return single.unionByName(groups).drop("_h", "_repeated")
