"""A plain pandas + hashlib implementation of the pipeline's steps, as the benchmark's reference.

Same steps as :func:`pseudonymise.pipeline.run_extraction`, done the straightforward way in one
process: read each extract in chunks, validate (identity code, required fields, dates, numbers,
codes), pseudonymise with ``hmac``/``hashlib``, select the cohort and matched controls, keep the
scope's variables and periods, generalise dates and write Parquet.  It is written to be fair
(vectorised pandas where pandas offers it), not to be slow.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import numpy as np
import pandas as pd

from catalogue.codes import CODE_SYSTEMS, icd10_codes, table_codes
from catalogue.registries import load_schema
from permits.scope import PermitScope
from pseudonymise.hetu import CENTURY_SIGNS, CHECK_ALPHABET, FORMAT

CHUNK = 500_000
_PY_DATE = {"yyyy-MM-dd": "%Y-%m-%d", "d.M.yyyy": "%d.%m.%Y"}


def _hetu_ok(h: pd.Series) -> pd.Series:
    parts = h.str.extract(FORMAT.pattern)
    ok = parts[0].notna()
    century = parts[3].map(CENTURY_SIGNS)
    year = century + pd.to_numeric(parts[2], errors="coerce")
    dates = pd.to_datetime(
        year.astype("Int64").astype(str) + "-" + parts[1] + "-" + parts[0], format="%Y-%m-%d", errors="coerce")
    nnn = pd.to_numeric(parts[4], errors="coerce")
    number = pd.to_numeric(parts[0] + parts[1] + parts[2] + parts[4], errors="coerce")
    check = (number % 31).map(lambda i: CHECK_ALPHABET[int(i)] if i == i else None)
    return ok & dates.notna() & (nnn >= 2) & (nnn < 900) & (check == parts[5])


def _code_ok(system: str, s: pd.Series) -> pd.Series:
    if system == "icd10":
        codes = icd10_codes()
        parts = s.str.split(r"[*+#&]", regex=True)
        return s.str.fullmatch(CODE_SYSTEMS["icd10"].pattern.strip("^$")) & parts.map(
            lambda ps: all(p in codes or (len(p) == 5 and p[:4] in codes) for p in ps))
    ok = s.str.fullmatch(CODE_SYSTEMS[system].pattern.strip("^$")).fillna(False)
    table = table_codes(system)
    return ok & s.isin(table) if table else ok


def _validate(df: pd.DataFrame, registry: str) -> pd.Series:
    schema = load_schema(registry)
    ok = _hetu_ok(df["hetu"].fillna("").str.strip())
    for c in schema.columns[1:]:
        v = df[c.name]
        blank = v.isna() | (v.str.strip() == "")
        if not c.nullable:
            ok &= ~blank
        if c.type == "date":
            ok &= blank | pd.to_datetime(v, format=_PY_DATE[schema.date_format], errors="coerce").notna()
        elif c.type in ("int", "decimal"):
            ok &= blank | pd.to_numeric(v.str.replace(schema.decimal, ".", regex=False), errors="coerce").notna()
        elif c.type == "code":
            systems = c.code_system.split("|")
            if c.system_column:
                code_ok = pd.Series(False, index=df.index)
                for system in systems:
                    code_ok |= (df[c.system_column] == system.upper()) & _code_ok(system, v.fillna(""))
            else:
                code_ok = _code_ok(systems[0], v.fillna(""))
            ok &= blank | code_ok
    return ok & ~df.duplicated()


def _pseudonyms(key: bytes, codes: pd.Series) -> list[str]:
    return [hmac.new(key, c.encode(), hashlib.sha256).hexdigest()[:32] for c in codes]


def run(scope: PermitScope, in_dir: Path, out_dir: Path, key: bytes) -> dict[str, int]:
    """Run the reference implementation; returns delivered rows per dataset."""
    out_dir.mkdir(parents=True, exist_ok=True)
    valid: dict[str, pd.DataFrame] = {}
    needed = set(scope.registries) | ({scope.cohort.registry, "population"} if scope.cohort else set())
    for registry in sorted(needed):
        schema = load_schema(registry)
        frames = []
        reader = pd.read_csv(in_dir / schema.file, sep=schema.delimiter, dtype=str, keep_default_na=False,
                             na_values=[""], chunksize=CHUNK, encoding="utf-8", encoding_errors="replace",
                             on_bad_lines="skip", engine="c")
        for chunk in reader:
            ok = _validate(chunk, registry)
            good = chunk[ok].copy()
            good["pseudonym"] = _pseudonyms(key, good["hetu"].str.strip().str.upper())
            frames.append(good.drop(columns="hetu"))
        df = pd.concat(frames, ignore_index=True)
        for c in schema.columns[1:]:
            if c.type == "date":
                df[c.name] = pd.to_datetime(df[c.name], format=_PY_DATE[schema.date_format], errors="coerce")
        valid[registry] = df
    members = None
    if scope.cohort:
        c = scope.cohort
        ev = valid[c.registry]
        date = ev[load_schema(c.registry).event_date]
        pattern = r"(?:^|[*+#&])(?:" + "|".join(map(re.escape, c.code_prefixes)) + ")"
        hit = np.zeros(len(ev), dtype=bool)
        for col in c.code_columns:
            hit |= ev[col].fillna("").str.contains(pattern, regex=True).to_numpy()
        in_period = ((date >= pd.Timestamp(c.period.start)) & (date <= pd.Timestamp(c.period.end))).to_numpy()
        sel = ev[hit & in_period]
        cases = sel.groupby("pseudonym", as_index=False)[load_schema(c.registry).event_date].min()
        pop = valid["population"].drop_duplicates("pseudonym")
        pop = pop.assign(_by=pop["birth_date"].dt.year, _sex=pop["sex"])
        case_rows = cases.merge(pop[["pseudonym", "_by", "_sex"]], on="pseudonym", how="left")
        case_rows["_rank"] = case_rows.sort_values("pseudonym").groupby(["_by", "_sex"]).cumcount() + 1
        cand = pop[~pop["pseudonym"].isin(cases["pseudonym"])].sort_values("pseudonym")
        cand = cand.assign(_rank=(cand.groupby(["_by", "_sex"]).cumcount() // c.controls_per_case) + 1)
        controls = cand.merge(case_rows[["_by", "_sex", "_rank"]], on=["_by", "_sex", "_rank"])
        members = set(cases["pseudonym"]) | set(controls["pseudonym"])
    delivered = {}
    for registry, reg in scope.registries.items():
        schema = load_schema(registry)
        df = valid[registry]
        if reg.period is not None:
            d = df[schema.event_date]
            df = df[(d >= pd.Timestamp(reg.period.start)) & (d <= pd.Timestamp(reg.period.end))]
        if members is not None:
            df = df[df["pseudonym"].isin(members)]
        df = df[["pseudonym", *reg.variables]].copy()
        if scope.generalise.dates != "day":
            freq = "MS" if scope.generalise.dates == "month" else "YS"
            for c in df.columns:
                if pd.api.types.is_datetime64_any_dtype(df[c]):
                    df[c] = df[c].dt.to_period(freq[0]).dt.start_time
        df.to_parquet(out_dir / f"{registry}.parquet", index=False)
        delivered[registry] = len(df)
    return delivered
