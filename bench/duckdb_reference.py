"""A single-node DuckDB implementation of the pipeline's work, as the benchmark's peer.

What a user with one machine would write instead of Spark: the same registry contracts, checked by the same
rules in SQL, with the same quarantine reasons (the benchmark compares the counts per registry and reason with
the pipeline's in the same run), real HMAC-SHA256 pseudonyms, the cohort and matched controls of the pandas
reference (``bench/pandas_reference.py``), minimisation to the scope's variables and periods, dates
generalised, and Parquet writes of the delivery and of the quarantine.

Where it differs, stated:

- HMAC-SHA256 is built from DuckDB's ``sha256`` on blobs: ``sha256((K xor opad) || unhex(sha256((K xor ipad) ||
  code)))``, which is HMAC by definition (RFC 2104) for a key up to the hash's 64-byte block; the padded keys go
  to DuckDB as bound parameters.  A test checks it against Python's ``hmac``.
- A line is read whole and split on the delimiter; a quoted line is split the same way (the pipeline sends
  quoted lines through Spark's CSV parser).  The synthetic extracts hold no quoted line; the run counts them.
- Lines that are not UTF-8 are counted from DuckDB's rejects table (``encoding``) rather than kept.
- Only the CSV registries: the FHIR adapter has no peer here.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from catalogue.codes import CODE_SYSTEMS, COMBINATION_JOINERS, icd10_codes, table_codes
from catalogue.registries import RegistrySchema, load_schema
from permits.scope import PermitScope
from pseudonymise import hetu as H
from pseudonymise.pseudonym import PSEUDONYM_HEX_CHARS

_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_PY_DATE = {"d.M.yyyy": "%d.%m.%Y"}


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer padded keys of HMAC-SHA256 (RFC 2104)."""
    if len(key) > 64:
        raise ValueError("HMAC keys longer than the block are hashed first; not needed here")
    block = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def pseudonym_sql(code: str) -> str:
    """SQL for the pseudonym of ``code`` (an expression), reading the pads as parameters ``$ipad``, ``$opad``."""
    mac = f"sha256($opad::BLOB || unhex(sha256($ipad::BLOB || encode({code}))))"
    return f"substr({mac}, 1, {PSEUDONYM_HEX_CHARS})"


def _hetu_reason(h: str, allow_temporary: bool) -> str:
    """The identity-code reason of normalised code ``h`` (the rules of :func:`pseudonymise.hetu.rejection_reason`)."""
    sign = f"substr({h}, 7, 1)"
    c1900 = ",".join(_q(s) for s, c in H.CENTURY_SIGNS.items() if c == 1900)
    c2000 = ",".join(_q(s) for s, c in H.CENTURY_SIGNS.items() if c == 2000)
    century = f"(CASE WHEN {sign} = '+' THEN 1800 WHEN {sign} IN ({c1900}) THEN 1900 WHEN {sign} IN ({c2000}) " \
              f"THEN 2000 END)"
    dd, mm, yy = (f"try_cast(substr({h}, {i}, 2) AS INTEGER)" for i in (1, 3, 5))
    nnn = f"try_cast(substr({h}, 8, 3) AS INTEGER)"
    year = f"({century} + {yy})"
    leap = f"(({year} % 4 = 0) AND (({year} % 100 <> 0) OR ({year} % 400 = 0)))"
    days = "[" + ",".join(map(str, _MONTH_DAYS)) + "]"
    last = f"(list_extract({days}, {mm}) + CASE WHEN {mm} = 2 AND {leap} THEN 1 ELSE 0 END)"
    date_ok = f"({mm} BETWEEN 1 AND 12 AND {dd} >= 1 AND {dd} <= {last})"
    number = f"((({dd} * 100 + {mm}) * 100 + {yy})::BIGINT * 1000 + {nnn})"
    expected = f"substr({_q(H.CHECK_ALPHABET)}, ({number} % 31 + 1)::INTEGER, 1)"
    reason = (f"CASE WHEN {h} IS NULL OR {h} = '' THEN {_q(H.HETU_MISSING)} "
              f"WHEN NOT regexp_matches({h}, '^[0-9]{{6}}[-+A-FU-Y][0-9]{{3}}[0-9A-Y]$') THEN {_q(H.HETU_FORMAT)} "
              f"WHEN NOT {date_ok} THEN {_q(H.HETU_DATE)} "
              f"WHEN {nnn} < 2 THEN {_q(H.HETU_INDIVIDUAL)} "
              f"WHEN substr({h}, 11, 1) <> {expected} THEN {_q(H.HETU_CHECKSUM)} ")
    if not allow_temporary:
        reason += f"WHEN {nnn} >= 900 THEN {_q(H.HETU_TEMPORARY)} "
    return reason + "END"


def _code_ok(system: str, v: str) -> str:
    cs = CODE_SYSTEMS[system]
    if system == "icd10":
        u = f"translate({v}, {_q(COMBINATION_JOINERS.replace('*', ''))}, " \
            f"{_q('*' * (len(COMBINATION_JOINERS) - 1))})"
        first = f"split_part({u}, '*', 1)"
        second = f"CASE WHEN strpos({u}, '*') > 0 THEN split_part({u}, '*', -1) END"

        def key(p: str) -> str:
            return f"CASE WHEN length({p}) = 5 THEN substr({p}, 1, 4) ELSE {p} END"

        return (f"(regexp_matches({v}, {_q(cs.pattern)}) AND {key(first)} IN (SELECT code FROM icd10) AND "
                f"({second} IS NULL OR {key(second)} IN (SELECT code FROM icd10)))")
    ok = f"regexp_matches({v}, {_q(cs.pattern)})"
    table = table_codes(system)
    if table:
        ok += f" AND {v} IN ({','.join(_q(c) for c in sorted(table))})"
    return f"({ok})"


def _date(v: str, fmt: str) -> str:
    if fmt == "yyyy-MM-dd":
        return f"CASE WHEN length({v}) = 10 AND substr({v}, 5, 1) = '-' AND substr({v}, 8, 1) = '-' " \
               f"THEN try_cast({v} AS DATE) END"
    return f"try_strptime({v}, {_q(_PY_DATE[fmt])})::DATE"


def validation_sql(schema: RegistrySchema, path: Path, *, allow_temporary: bool) -> str:
    """One SELECT giving each line of ``path`` its typed columns, ``_reason`` and ``_detail``, as the pipeline."""
    names = schema.names
    d = schema.delimiter
    raw = {n: f"nullif(trim(_f[{i + 1}]), '')" for i, n in enumerate(names)}
    typed: dict[str, str] = {}
    for c in schema.columns[1:]:
        v = raw[c.name]
        if c.type == "date":
            typed[c.name] = _date(v, schema.date_format)
        elif c.type == "int":
            typed[c.name] = f"try_cast({v} AS BIGINT)"
        elif c.type == "decimal":
            vv = f"replace({v}, {_q(schema.decimal)}, '.')" if schema.decimal != "." else v
            typed[c.name] = f"try_cast({vv} AS DECIMAL(18,4))"
        elif c.type == "code":
            typed[c.name] = f"upper({v})"
        else:
            typed[c.name] = v
    checks: list[tuple[str, str, str]] = [("malformed_line", f"expected {len(names)} fields",
                                           f"len(_f) <> {len(names)}")]
    for r in (H.HETU_MISSING, H.HETU_FORMAT, H.HETU_DATE, H.HETU_INDIVIDUAL, H.HETU_CHECKSUM, H.HETU_TEMPORARY):
        checks.append((r, "hetu", f"coalesce(_hetu_reason = {_q(r)}, false)"))
    for c in schema.columns[1:]:
        if not c.nullable:
            checks.append(("missing_required", c.name, f"{raw[c.name]} IS NULL"))
    for kind, reason in (("date", "invalid_date"), ("int", "invalid_number"), ("decimal", "invalid_number")):
        for c in schema.columns[1:]:
            if c.type == kind:
                checks.append((reason, c.name, f"{raw[c.name]} IS NOT NULL AND \"{c.name}\" IS NULL"))
    for c in schema.columns[1:]:
        if c.type == "code":
            systems = c.code_system.split("|")
            if c.system_column:
                sel = f"upper(trim({raw[c.system_column]}))"
                ok = " OR ".join(f"({sel} = {_q(s.upper())} AND {_code_ok(s, chr(34) + c.name + chr(34))})"
                                 for s in systems)
            else:
                ok = _code_ok(systems[0], f'"{c.name}"')
            checks.append(("unknown_code", c.name, f"{raw[c.name]} IS NOT NULL AND NOT coalesce({ok}, false)"))
    if schema.event_date and schema.end_date:
        checks.append(("inconsistent_dates", schema.end_date,
                       f"coalesce(\"{schema.end_date}\" < \"{schema.event_date}\", false)"))
    from pseudonymise.validate import REASONS

    checks.sort(key=lambda c: REASONS.index(c[0]))
    reason = "CASE " + " ".join(f"WHEN {cond} THEN {_q(r)}" for r, _d, cond in checks) + " END"
    detail = "CASE " + " ".join(f"WHEN {cond} THEN {_q(dd)}" for _r, dd, cond in checks) + " END"
    source = (f"read_csv({_q(str(path))}, columns={{'line': 'VARCHAR'}}, delim='\\x01', quote='', escape='', "
              f"header=true, auto_detect=false, ignore_errors=true, store_rejects=true, "
              f"rejects_table={_q('rejects_' + schema.registry)}, "
              f"rejects_scan={_q('reject_scans_' + schema.registry)})")
    return f"""
        WITH lines AS (SELECT line, row_number() OVER () AS _n FROM {source}),
        split AS (SELECT line, _n, string_split(line, {_q(d)}) AS _f FROM lines),
        parsed AS (SELECT line, _n, _f, upper(trim(_f[1])) AS hetu,
                   {", ".join(f'{e} AS "{n}"' for n, e in typed.items())} FROM split),
        checked AS (SELECT *, {_hetu_reason("hetu", allow_temporary)} AS _hetu_reason FROM parsed),
        verdict AS (SELECT hetu, {", ".join(f'"{n}"' for n in typed)}, line, _n,
                    {reason} AS _reason, {detail} AS _detail FROM checked)
        SELECT hetu, {", ".join(f'"{n}"' for n in typed)}, line,
               CASE WHEN _reason IS NULL AND row_number() OVER (PARTITION BY _reason IS NULL, line ORDER BY _n) > 1
                    THEN 'duplicate' ELSE _reason END AS _reason,
               CASE WHEN _reason IS NULL AND row_number() OVER (PARTITION BY _reason IS NULL, line ORDER BY _n) > 1
                    THEN 'line' ELSE _detail END AS _detail
        FROM verdict"""


def connect(threads: int, temp: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    temp.mkdir(parents=True, exist_ok=True)
    con.execute(f"SET threads = {threads}")
    con.execute(f"SET temp_directory = {_q(str(temp))}")
    con.execute("SET preserve_insertion_order = false")
    con.execute("CREATE TABLE icd10 (code VARCHAR PRIMARY KEY)")
    con.executemany("INSERT INTO icd10 VALUES (?)", [(c,) for c in sorted(icd10_codes())])
    return con


def _counts(con, registry: str) -> dict[str, int]:
    rows = con.execute(f"SELECT _reason, count(*) FROM v_{registry} WHERE _reason IS NOT NULL GROUP BY 1").fetchall()
    out = dict(rows)
    encoding = con.execute(f"SELECT count(*) FROM rejects_{registry} WHERE error_type = 'INVALID ENCODING'"
                           ).fetchone()[0]
    other = con.execute(f"SELECT count(*) FROM rejects_{registry} WHERE error_type <> 'INVALID ENCODING'"
                        ).fetchone()[0]
    if other:
        raise RuntimeError(f"{registry}: DuckDB rejected {other} lines for another reason than their encoding")
    if encoding:
        out["encoding"] = encoding
    return dict(sorted(out.items()))


def copy_only(in_dir: Path, out_dir: Path, registries: list[str], *, threads: int, temp: Path) -> float:
    """The plain copy: each extract read by DuckDB's CSV reader and written as Parquet, nothing checked."""
    out_dir.mkdir(parents=True, exist_ok=True)
    con = connect(threads, temp)
    start = time.perf_counter()
    for registry in registries:
        schema = load_schema(registry)
        target = _q(str(out_dir / f"{registry}.parquet"))
        con.execute(f"COPY (SELECT * FROM read_csv({_q(str(in_dir / schema.file))}, delim={_q(schema.delimiter)}, "
                    f"header=true, all_varchar=true, ignore_errors=true)) TO {target} (FORMAT parquet)")
    seconds = time.perf_counter() - start
    con.close()
    return seconds


def checks_only(in_dir: Path, registries: list[str], *, allow_temporary: bool, threads: int,
                temp: Path) -> tuple[float, dict[str, dict[str, int]]]:
    """Every line parsed and checked, counted per reason, nothing written."""
    con = connect(threads, temp)
    start = time.perf_counter()
    counts = {}
    for registry in registries:
        schema = load_schema(registry)
        sql = validation_sql(schema, in_dir / schema.file, allow_temporary=allow_temporary)
        con.execute(f"CREATE TEMP TABLE v_{registry} AS SELECT _reason, _detail FROM ({sql})")
        counts[registry] = _counts(con, registry)
    seconds = time.perf_counter() - start
    con.close()
    return seconds, counts


def run(scope: PermitScope, in_dir: Path, out_dir: Path, key: bytes, *, threads: int = 2,
        temp: Path | None = None) -> dict:
    """Validate, quarantine, pseudonymise, select the cohort, minimise, generalise and write; returns the
    quarantine counts per registry and reason and the delivered rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quarantine").mkdir(exist_ok=True)
    con = connect(threads, temp or out_dir / "_tmp")
    ipad, opad = hmac_pads(key)
    needed = sorted(set(scope.registries) | ({scope.cohort.registry, "population"} if scope.cohort else set()))
    counts: dict[str, dict[str, int]] = {}
    for registry in needed:
        schema = load_schema(registry)
        sql = validation_sql(schema, in_dir / schema.file, allow_temporary=scope.allow_temporary_ids)
        con.execute(f"CREATE TEMP TABLE v_{registry} AS {sql}")
        con.execute(f"COPY (SELECT * FROM v_{registry} WHERE _reason IS NOT NULL) TO "
                    f"{_q(str(out_dir / 'quarantine' / f'{registry}.parquet'))} (FORMAT parquet)")
        counts[registry] = _counts(con, registry)
        cols = ", ".join(f'"{n}"' for n in schema.names[1:])
        con.execute(f"CREATE TEMP TABLE ok_{registry} AS SELECT {pseudonym_sql('hetu')} AS pseudonym, {cols} "
                    f"FROM v_{registry} WHERE _reason IS NULL", {"ipad": ipad, "opad": opad})
        con.execute(f"DROP TABLE v_{registry}")
    members = None
    if scope.cohort:
        c = scope.cohort
        date = load_schema(c.registry).event_date
        pattern = "(^|[*+#&])(" + "|".join(c.code_prefixes) + ")"
        hit = " OR ".join(f"regexp_matches(coalesce(\"{col}\", ''), {_q(pattern)})" for col in c.code_columns)
        con.execute(f"""
            CREATE TEMP TABLE members AS
            WITH cases AS (SELECT pseudonym, min("{date}") AS index_date FROM ok_{c.registry}
                           WHERE ({hit}) AND "{date}" BETWEEN DATE {_q(str(c.period.start))}
                           AND DATE {_q(str(c.period.end))} GROUP BY pseudonym),
            pop AS (SELECT pseudonym, any_value(year(birth_date)) AS _by, any_value(sex) AS _sex
                    FROM ok_population GROUP BY pseudonym),
            case_rows AS (SELECT cases.pseudonym, _by, _sex,
                          row_number() OVER (PARTITION BY _by, _sex ORDER BY cases.pseudonym) AS _rank
                          FROM cases LEFT JOIN pop USING (pseudonym)),
            cand AS (SELECT pseudonym, _by, _sex,
                     (row_number() OVER (PARTITION BY _by, _sex ORDER BY pseudonym) - 1) // {c.controls_per_case} + 1
                     AS _rank FROM pop WHERE pseudonym NOT IN (SELECT pseudonym FROM cases)),
            controls AS (SELECT cand.pseudonym FROM cand JOIN case_rows USING (_by, _sex, _rank))
            SELECT pseudonym FROM cases UNION SELECT pseudonym FROM controls""")
        members = "members"
    delivered = {}
    for registry, reg in scope.registries.items():
        schema = load_schema(registry)
        where = ["true"]
        if reg.period is not None:
            where.append(f"\"{schema.event_date}\" BETWEEN DATE {_q(str(reg.period.start))} "
                         f"AND DATE {_q(str(reg.period.end))}")
        if members:
            where.append("pseudonym IN (SELECT pseudonym FROM members)")
        cols = []
        for v in reg.variables:
            is_date = schema.column(v).type == "date"
            if is_date and scope.generalise.dates != "day":
                cols.append(f"date_trunc('{scope.generalise.dates}', \"{v}\")::DATE AS \"{v}\"")
            else:
                cols.append(f'"{v}"')
        target = out_dir / f"{registry}.parquet"
        con.execute(f"COPY (SELECT pseudonym, {', '.join(cols)} FROM ok_{registry} WHERE {' AND '.join(where)}) "
                    f"TO {_q(str(target))} (FORMAT parquet)")
        delivered[registry] = con.execute(f"SELECT count(*) FROM read_parquet({_q(str(target))})").fetchone()[0]
    con.close()
    return {"quarantined": counts, "delivered": delivered}
