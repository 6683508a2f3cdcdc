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


def _hetu_parts(h: str) -> str:
    """Select items cutting normalised code ``h`` into its parts once per row (``_dd`` ... ``_cen``)."""
    sign = f"substr({h}, 7, 1)"
    c1900 = ",".join(_q(s) for s, c in H.CENTURY_SIGNS.items() if c == 1900)
    c2000 = ",".join(_q(s) for s, c in H.CENTURY_SIGNS.items() if c == 2000)
    century = f"CASE WHEN {sign} = '+' THEN 1800 WHEN {sign} IN ({c1900}) THEN 1900 WHEN {sign} IN ({c2000}) " \
              f"THEN 2000 END"
    pairs = (f"try_cast(substr({h}, {i}, 2) AS INTEGER) AS _{n}" for i, n in ((1, "dd"), (3, "mm"), (5, "yy")))
    return ", ".join([*pairs, f"try_cast(substr({h}, 8, 3) AS INTEGER) AS _nnn", f"{century} AS _cen"])


def _hetu_reason(h: str, allow_temporary: bool, k: dict[str, int]) -> str:
    """The identity-code reason of normalised code ``h`` (the rules of :func:`pseudonymise.hetu.rejection_reason`)
    as its verdict's index ``k[reason]``; reads the parts of :func:`_hetu_parts`."""
    year = "(_cen + _yy)"
    leap = f"(({year} % 4 = 0) AND (({year} % 100 <> 0) OR ({year} % 400 = 0)))"
    days = "[" + ",".join(map(str, _MONTH_DAYS)) + "]"
    last = f"(list_extract({days}, _mm) + CASE WHEN _mm = 2 AND {leap} THEN 1 ELSE 0 END)"
    date_ok = f"(_mm BETWEEN 1 AND 12 AND _dd >= 1 AND _dd <= {last})"
    number = "(((_dd * 100 + _mm) * 100 + _yy)::BIGINT * 1000 + _nnn)"
    expected = f"substr({_q(H.CHECK_ALPHABET)}, ({number} % 31 + 1)::INTEGER, 1)"
    reason = (f"CASE WHEN {h} IS NULL OR {h} = '' THEN {k[H.HETU_MISSING]} "
              f"WHEN NOT regexp_matches({h}, '^[0-9]{{6}}[-+A-FU-Y][0-9]{{3}}[0-9A-Y]$') THEN {k[H.HETU_FORMAT]} "
              f"WHEN NOT {date_ok} THEN {k[H.HETU_DATE]} "
              f"WHEN _nnn < 2 THEN {k[H.HETU_INDIVIDUAL]} "
              f"WHEN substr({h}, 11, 1) <> {expected} THEN {k[H.HETU_CHECKSUM]} ")
    if not allow_temporary:
        reason += f"WHEN _nnn >= 900 THEN {k[H.HETU_TEMPORARY]} "
    return reason + "END"


def _icd10_keys(v: str) -> tuple[str, str]:
    """The WHO codes the two parts of Finnish ICD-10 code ``v`` are looked up by (the second null if none)."""
    u = f"translate({v}, {_q(COMBINATION_JOINERS.replace('*', ''))}, " \
        f"{_q('*' * (len(COMBINATION_JOINERS) - 1))})"
    first = f"split_part({u}, '*', 1)"
    second = f"CASE WHEN strpos({u}, '*') > 0 THEN split_part({u}, '*', -1) END"

    def key(p: str) -> str:
        return f"CASE WHEN length({p}) = 5 THEN substr({p}, 1, 4) ELSE {p} END"

    return key(first), key(second)


def _icd10_join(schema: RegistrySchema) -> tuple[str, str, str]:
    """For each ICD-10 column: select items giving its lookup keys (``_k1_<col>``, ``_k2_<col>``), and the select
    items and LEFT JOINs of the code table that give the codes found (``_c1_<col>``, ``_c2_<col>``): hash joins,
    where an ``IN (SELECT ...)`` per row was five times slower."""
    keys, found, joins = [], [], []
    for c in schema.columns:
        if c.type == "code" and "icd10" in (c.code_system or ""):
            k1, k2 = _icd10_keys(f'upper(nullif(trim(_f[{schema.names.index(c.name) + 1}]), \'\'))')
            keys += [f'{k1} AS "_k1_{c.name}"', f'{k2} AS "_k2_{c.name}"']
            found += [f'"_h1_{c.name}".code AS "_c1_{c.name}"', f'"_h2_{c.name}".code AS "_c2_{c.name}"']
            joins.append(f'LEFT JOIN icd10 AS "_h1_{c.name}" ON "_k1_{c.name}" = "_h1_{c.name}".code '
                         f'LEFT JOIN icd10 AS "_h2_{c.name}" ON "_k2_{c.name}" = "_h2_{c.name}".code')
    return ", ".join(keys), ", ".join(found), " ".join(joins)


def _code_ok(system: str, v: str, column: str) -> str:
    cs = CODE_SYSTEMS[system]
    ok = f"regexp_matches({v}, {_q(cs.pattern)})"
    if system == "icd10":
        ok += f' AND "_c1_{column}" IS NOT NULL AND ("_k2_{column}" IS NULL OR "_c2_{column}" IS NOT NULL)'
    table = table_codes(system)
    if table:
        ok += f" AND {v} IN ({','.join(_q(c) for c in sorted(table))})"
    return f"({ok})"


def _date(v: str, fmt: str) -> str:
    if fmt == "yyyy-MM-dd":
        return f"CASE WHEN length({v}) = 10 AND substr({v}, 5, 1) = '-' AND substr({v}, 8, 1) = '-' " \
               f"THEN try_cast({v} AS DATE) END"
    return f"try_strptime({v}, {_q(_PY_DATE[fmt])})::DATE"


def _raw_columns(names: list[str]) -> dict[str, str]:
    """The column holding each field's trimmed text (null when empty), as :func:`validation_sql` names it."""
    return {n: f'"_r_{n}"' for n in names}


def _verdicts(schema: RegistrySchema) -> list[tuple[str, str, str]]:
    """The registry's rules as ``(reason, detail, SQL condition)``, in the order of the pipeline's REASONS."""
    names = schema.names
    raw = _raw_columns(names)
    checks: list[tuple[str, str, str]] = [("malformed_line", f"expected {len(names)} fields",
                                           f"_nf <> {len(names)}")]
    for r in (H.HETU_MISSING, H.HETU_FORMAT, H.HETU_DATE, H.HETU_INDIVIDUAL, H.HETU_CHECKSUM, H.HETU_TEMPORARY):
        checks.append((r, "hetu", "_hetu_reason IS NOT NULL"))  # one test: _hetu_reason is the index itself
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
                ok = " OR ".join(f"({sel} = {_q(s.upper())} AND {_code_ok(s, chr(34) + c.name + chr(34), c.name)})"
                                 for s in systems)
            else:
                ok = _code_ok(systems[0], f'"{c.name}"', c.name)
            checks.append(("unknown_code", c.name, f"{raw[c.name]} IS NOT NULL AND NOT coalesce({ok}, false)"))
    if schema.event_date and schema.end_date:
        checks.append(("inconsistent_dates", schema.end_date,
                       f"\"{schema.end_date}\" < \"{schema.event_date}\""))
    from pseudonymise.validate import REASONS

    checks.sort(key=lambda c: REASONS.index(c[0]))
    return [*checks, ("duplicate", "line", "false")]  # the last verdict is given by :func:`_mark_duplicates`


def validation_sql(schema: RegistrySchema, path: Path, *, allow_temporary: bool) -> str:
    """One SELECT giving each line of ``path`` its typed columns, ``_k`` (null for a valid line, else the
    1-based index of the first rule it breaks in :func:`_verdicts`) and ``_h``, a 64-bit hash of the line.

    The rule is found by one CASE, and its reason and detail are looked up from ``_k`` only when they are
    needed (the counts, the quarantine)."""
    names = schema.names
    d = schema.delimiter
    raw = _raw_columns(names)
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
    whens, hetu_index = [], {}
    for i, (reason, detail, cond) in enumerate(_verdicts(schema)[:-1], start=1):
        if detail != "hetu":
            whens.append(f"WHEN {cond} THEN {i}")
            continue
        if not hetu_index:  # the identity code's rules are consecutive: one test, its index computed apart
            whens.append("WHEN _hetu_reason IS NOT NULL THEN _hetu_reason")
        hetu_index[reason] = i
    verdict = "CASE " + " ".join(whens) + " END"
    icd_keys, icd_found, icd_joins = _icd10_join(schema)
    source = (f"read_csv({_q(str(path))}, columns={{'line': 'VARCHAR'}}, delim='\\x01', quote='', escape='', "
              f"header=true, auto_detect=false, ignore_errors=true, store_rejects=true, "
              f"rejects_table={_q('rejects_' + schema.registry)}, "
              f"rejects_scan={_q('reject_scans_' + schema.registry)})")
    return f"""
        WITH split AS (SELECT line, string_split(line, {_q(d)}) AS _f FROM {source}),
        fields AS (SELECT line, len(_f) AS _nf, upper(trim(_f[1])) AS hetu,
                   {", ".join(f"nullif(trim(_f[{i + 1}]), '') AS {raw[n]}" for i, n in enumerate(names) if i)}
                   {", " + icd_keys if icd_keys else ""} FROM split),
        coded AS (SELECT fields.* {", " + icd_found if icd_found else ""} FROM fields {icd_joins}),
        parts AS (SELECT *, {_hetu_parts("hetu")} FROM coded),
        checked AS (SELECT *, {", ".join(f'{e} AS "{n}"' for n, e in typed.items())},
                    {_hetu_reason("hetu", allow_temporary, hetu_index)} AS _hetu_reason FROM parts)
        SELECT hetu, {", ".join(f'"{n}"' for n in typed)}, line, hash(line) AS _h, {verdict} AS _k FROM checked"""


def validate_into(con: duckdb.DuckDBPyConnection, schema: RegistrySchema, path: Path, *, allow_temporary: bool,
                  duplicates: bool = True) -> None:
    """Table ``v_<registry>``: every line with its typed columns and verdict ``_k`` (see :func:`validation_sql`);
    with ``duplicates``, the later copies of a repeated valid line are marked ``duplicate``."""
    table = f"v_{schema.registry}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS "
                f"{validation_sql(schema, path, allow_temporary=allow_temporary)}")
    if duplicates:
        _mark_duplicates(con, table, len(_verdicts(schema)))


def _mark_duplicates(con: duckdb.DuckDBPyConnection, table: str, k_duplicate: int) -> None:
    """Keep one of each repeated valid line: candidates are narrowed by the 64-bit hash (an aggregation over
    the hashes), and only their rows are grouped by the line itself, so a collision never joins two lines."""
    con.execute(f"""
        UPDATE {table} SET _k = {k_duplicate} WHERE rowid IN (
            SELECT rowid FROM (
                SELECT rowid, row_number() OVER (PARTITION BY line ORDER BY rowid) AS _n FROM {table}
                WHERE _k IS NULL AND _h IN (SELECT _h FROM {table} WHERE _k IS NULL GROUP BY _h HAVING count(*) > 1))
            WHERE _n > 1)""")


def _lookup(schema: RegistrySchema, part: int) -> str:
    """SQL turning ``_k`` into the reason (``part`` 0) or the detail (1)."""
    values = ", ".join(_q(v[part]) for v in _verdicts(schema))
    return f"[{values}][_k]"


def connect(threads: int, temp: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    temp.mkdir(parents=True, exist_ok=True)
    con.execute(f"SET threads = {threads}")
    con.execute(f"SET temp_directory = {_q(str(temp))}")
    con.execute("SET preserve_insertion_order = false")
    # The code table (12,000 rows) must be the hash join's build side; the optimizer swapped it with the
    # extract's millions of lines (whose size a CSV scan does not know), and the lookups took four times longer.
    con.execute("SET disabled_optimizers = 'build_side_probe_side'")
    con.execute("CREATE TABLE icd10 (code VARCHAR PRIMARY KEY)")
    con.executemany("INSERT INTO icd10 VALUES (?)", [(c,) for c in sorted(icd10_codes())])
    return con


def _counts(con, schema: RegistrySchema, rows: list[tuple[int, int]]) -> dict[str, int]:
    """Quarantine counts per reason from ``(_k, count)`` rows, with the lines DuckDB's reader rejected for their
    encoding."""
    verdicts = _verdicts(schema)
    out = {verdicts[k - 1][0]: n for k, n in rows if k is not None}
    registry = schema.registry
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
                temp: Path, duplicates: bool = False) -> tuple[float, dict[str, dict[str, int]]]:
    """Every line parsed and checked, counted per reason, nothing written (as the pipeline's checks-only floor,
    without the duplicates search unless ``duplicates``)."""
    con = connect(threads, temp)
    start = time.perf_counter()
    counts = {}
    for registry in registries:
        schema = load_schema(registry)
        path = in_dir / schema.file
        if duplicates:
            validate_into(con, schema, path, allow_temporary=allow_temporary)
            rows = con.execute(f"SELECT _k, count(*) FROM v_{registry} GROUP BY _k").fetchall()
        else:
            sql = validation_sql(schema, path, allow_temporary=allow_temporary)
            rows = con.execute(f"SELECT _k, count(*) FROM ({sql}) GROUP BY _k").fetchall()
        counts[registry] = _counts(con, schema, rows)
    seconds = time.perf_counter() - start
    con.close()
    return seconds, counts


def run(scope: PermitScope, in_dir: Path, out_dir: Path, key: bytes, *, threads: int = 2,
        temp: Path | None = None) -> dict:
    """Validate, quarantine, select the cohort, minimise, pseudonymise, generalise and write; returns the
    quarantine counts per registry and reason and the delivered rows.

    As the pipeline, persons are linked on the normalised identity code inside the run and only what leaves is
    hashed (and the persons who can enter the cohort, whose pseudonyms order the control draw)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quarantine").mkdir(exist_ok=True)
    con = connect(threads, temp or out_dir / "_tmp")
    pads = dict(zip(("ipad", "opad"), hmac_pads(key), strict=True))
    needed = sorted(set(scope.registries) | ({scope.cohort.registry, "population"} if scope.cohort else set()))
    counts: dict[str, dict[str, int]] = {}
    for registry in needed:
        schema = load_schema(registry)
        validate_into(con, schema, in_dir / schema.file, allow_temporary=scope.allow_temporary_ids)
        cols = ", ".join(f'"{n}"' for n in schema.names[1:])
        con.execute(f"COPY (SELECT hetu, {cols}, line, {_lookup(schema, 0)} AS _reason, {_lookup(schema, 1)} AS "
                    f"_detail FROM v_{registry} WHERE _k IS NOT NULL) TO "
                    f"{_q(str(out_dir / 'quarantine' / f'{registry}.parquet'))} (FORMAT parquet)")
        counts[registry] = _counts(con, schema, con.execute(
            f"SELECT _k, count(*) FROM v_{registry} WHERE _k IS NOT NULL GROUP BY _k").fetchall())
        con.execute(f"CREATE VIEW ok_{registry} AS SELECT hetu, {cols} FROM v_{registry} WHERE _k IS NULL")
    members = None
    if scope.cohort:
        c = scope.cohort
        date = load_schema(c.registry).event_date
        pattern = "(^|[*+#&])(" + "|".join(c.code_prefixes) + ")"
        hit = " OR ".join(f"regexp_matches(coalesce(\"{col}\", ''), {_q(pattern)})" for col in c.code_columns)
        con.execute(f"""
            CREATE TEMP TABLE members AS
            WITH cases AS (SELECT hetu, {pseudonym_sql('hetu')} AS pseudonym, index_date FROM (
                               SELECT hetu, min("{date}") AS index_date FROM ok_{c.registry}
                               WHERE ({hit}) AND "{date}" BETWEEN DATE {_q(str(c.period.start))}
                               AND DATE {_q(str(c.period.end))} GROUP BY hetu)),
            pop AS (SELECT hetu, {pseudonym_sql('hetu')} AS pseudonym, _by, _sex FROM (
                        SELECT hetu, any_value(year(birth_date)) AS _by, any_value(sex) AS _sex
                        FROM ok_population GROUP BY hetu)),
            case_rows AS (SELECT cases.pseudonym, _by, _sex,
                          row_number() OVER (PARTITION BY _by, _sex ORDER BY cases.pseudonym) AS _rank
                          FROM cases LEFT JOIN pop USING (hetu)),
            cand AS (SELECT hetu, pseudonym, _by, _sex,
                     (row_number() OVER (PARTITION BY _by, _sex ORDER BY pseudonym) - 1) // {c.controls_per_case} + 1
                     AS _rank FROM pop WHERE hetu NOT IN (SELECT hetu FROM cases)),
            controls AS (SELECT cand.hetu, cand.pseudonym FROM cand JOIN case_rows USING (_by, _sex, _rank))
            SELECT hetu, pseudonym FROM cases UNION SELECT hetu, pseudonym FROM controls""", pads)
        members = "members"
    delivered = {}
    for registry, reg in scope.registries.items():
        schema = load_schema(registry)
        where = ["true"]
        if reg.period is not None:
            where.append(f"\"{schema.event_date}\" BETWEEN DATE {_q(str(reg.period.start))} "
                         f"AND DATE {_q(str(reg.period.end))}")
        cols = []
        for v in reg.variables:
            is_date = schema.column(v).type == "date"
            if is_date and scope.generalise.dates != "day":
                cols.append(f"date_trunc('{scope.generalise.dates}', \"{v}\")::DATE AS \"{v}\"")
            else:
                cols.append(f'"{v}"')
        if members:
            source = f"ok_{registry} JOIN members USING (hetu)"
            pseudonym, params = "pseudonym", {}
        else:
            source, pseudonym, params = f"ok_{registry}", f"{pseudonym_sql('hetu')} AS pseudonym", pads
        target = out_dir / f"{registry}.parquet"
        con.execute(f"COPY (SELECT {pseudonym}, {', '.join(cols)} FROM {source} WHERE {' AND '.join(where)}) "
                    f"TO {_q(str(target))} (FORMAT parquet)", params)
        delivered[registry] = con.execute(f"SELECT count(*) FROM read_parquet({_q(str(target))})").fetchone()[0]
    con.close()
    return {"quarantined": counts, "delivered": delivered}
