"""Synthetic registry extracts, as the data controllers would deliver them.

``toisio synth --persons N --seed S --out DIR [--defect-rate R]`` writes one CSV
per registry in the layout of its schema (``catalogue/schemas``), plus
``ground_truth.csv`` listing every injected defect with the quarantine reason
the pipeline must give it.  Generation is vectorised with numpy and streamed in
chunks of persons, so memory stays flat whatever ``N`` is; the same seed gives
byte-identical files.

The registries are linked through the persons' identity codes and carry
plausible correlations: type 2 diabetes (E11) goes with metformin (A10BA02)
purchases, primary-care visits (E11 / ICPC-2 T90), a higher risk of myocardial
infarction (I21) and a higher mortality; cancers appear in the cancer registry,
in Hilmo and as causes of death.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from catalogue.codes import table_rows
from catalogue.registries import CSV_REGISTRIES, RegistrySchema, load_schema
from pseudonymise import synthetic_fhir as SF
from pseudonymise.hetu import CHECK_ALPHABET

EPOCH = np.datetime64("1970-01-01", "D")
WINDOW_START = int((np.datetime64("2000-01-01", "D") - EPOCH).astype(int))
WINDOW_END = int((np.datetime64("2024-12-31", "D") - EPOCH).astype(int))
REF_YEAR = 2015

# Defect kinds and the quarantine reason each must produce.
DEFECT_REASONS: dict[str, str] = {
    "bad_control_char": "hetu_checksum",
    "impossible_date": "invalid_date",
    "unknown_code": "unknown_code",
    "missing_required": "missing_required",
    "duplicate_row": "duplicate",
    "truncated_line": "malformed_line",
    "wrong_encoding": "encoding",
}
# Per registry: the column an impossible date / unknown code / missing value goes into, and
# the unknown (well-formed) code used.
DEFECT_TARGETS: dict[str, dict[str, str]] = {
    "population": {"date": "birth_date", "code": "municipality", "unknown": "999", "required": "sex"},
    "hilmo": {"date": "admission_date", "code": "main_dg", "unknown": "U999", "required": "provider"},
    "avohilmo": {"date": "visit_date", "code": "service_type", "unknown": "T99", "required": "reason"},
    "kela_purchases": {"date": "purchase_date", "code": "atc", "unknown": "Z99ZZ99", "required": "vnro"},
    "causes_of_death": {
        "date": "death_date", "code": "underlying_cause", "unknown": "U999", "required": "underlying_cause",
    },
    "cancer": {"date": "diagnosis_date", "code": "behaviour", "unknown": "7", "required": "morphology"},
}

PROVIDERS = np.array(["10102", "10123", "20311", "30447", "40512", "50698", "60713", "70825"])
COMMON_HILMO_DG = np.array(
    ["J189", "I10", "K358", "S720", "M171", "F329", "I489", "N390", "R074", "I639", "I500", "J459",
     "K802", "M5116", "S0600", "Z511"]
)
COMBINATION_DG = np.array(["E102+N083", "S720&W01", "T141#X59", "F03*G301", "M0690+I420"])
PROCEDURES = np.array(["JKA21", "NFB40", "FNG05", "TJA00", "KAS00", "AAF00", "JFB30", "NGB50"])
ICPC2_COMMON = np.array(["R05", "R74", "K86", "L03", "P76", "A97", "S88", "L86", "D73", "U71"])
ICD_AVO_COMMON = np.array(["J069", "I10", "M545", "F411", "J209", "Z000", "R509", "K590"])
PROFESSIONALS = np.array(["lääkäri", "sairaanhoitaja", "terveydenhoitaja", "hammaslääkäri", "fysioterapeutti"])
SERVICE_TYPES = np.array(["T11", "T11", "T11", "T20", "T30", "T42", "T51", "T60", "T71"])
GENERAL_ATC = np.array(["J01CA04", "N02BE01", "N06AB10", "R03AC02", "H03AA01", "M01AE01", "A02BC01",
                        "R06AE07", "N05BA01", "C09AA05", "C08CA01"])
DEATH_CAUSES_OTHER = np.array(["I251", "F03", "J189", "I639", "I500", "G309", "X59", "J441"])
# (ICD-O-3 topography, morphology, Hilmo/ICD-10 code, sex: 0 any, 1 male, 2 female)
CANCER_SITES = [
    ("C50.9", "8500", "C509", 2),
    ("C61.9", "8140", "C61", 1),
    ("C18.9", "8140", "C189", 0),
    ("C34.9", "8070", "C349", 0),
    ("C44.3", "8090", "C443", 0),
    ("C67.9", "8120", "C679", 0),
]


def _vnro(atc: str) -> str:
    return str(100000 + int(hashlib.sha256(atc.encode()).hexdigest(), 16) % 900000)


ATC_PRICE = {code: 5.0 + (int(hashlib.sha256(code.encode()).hexdigest(), 16) % 9000) / 100
             for code in (r["code"] for r in table_rows("atc"))}


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote."""

    persons: int
    rows: dict[str, int]
    defects: dict[str, int]
    out_dir: Path


def _iso(days: np.ndarray) -> np.ndarray:
    return np.datetime_as_string((EPOCH + days.astype("timedelta64[D]")), unit="D")


def _finnish_date(days: np.ndarray) -> pd.Series:
    iso = pd.Series(_iso(days))
    y, m, d = iso.str.slice(0, 4), iso.str.slice(5, 7).str.lstrip("0"), iso.str.slice(8, 10).str.lstrip("0")
    return d + "." + m + "." + y


def _money(values: np.ndarray) -> pd.Series:
    return pd.Series(np.char.mod("%.2f", np.round(values, 2)))


class _HetuAllocator:
    """Gives each person a unique identity code, deterministically, across chunks."""

    def __init__(self, rng: np.random.Generator):
        self.counters: Counter = Counter()
        odd = np.arange(3, 900, 2)
        even = np.arange(2, 900, 2)
        self.male = rng.permutation(odd)
        self.female = rng.permutation(even)
        self.temporary = rng.permutation(np.arange(900, 1000))

    def allocate(self, birth: np.ndarray, signs: np.ndarray, sex: np.ndarray, temporary: np.ndarray) -> np.ndarray:
        nnn = np.empty(len(birth), dtype=np.int64)
        for i in range(len(birth)):
            key = (int(birth[i]), signs[i], int(sex[i]), bool(temporary[i]))
            c = self.counters[key]
            self.counters[key] = c + 1
            pool = self.temporary if temporary[i] else self.male if sex[i] == 1 else self.female
            if c >= len(pool):
                raise RuntimeError("identity code space exhausted for one birth date")
            nnn[i] = pool[c]
            if temporary[i] and sex[i] == 1 and nnn[i] % 2 == 0:
                nnn[i] = nnn[i] + 1 if nnn[i] < 999 else nnn[i] - 1
        return nnn


def _hetu_strings(birth_days: np.ndarray, signs: np.ndarray, nnn: np.ndarray) -> np.ndarray:
    iso = _iso(birth_days)
    s = pd.Series(iso)
    ddmmyy = s.str.slice(8, 10) + s.str.slice(5, 7) + s.str.slice(2, 4)
    num = pd.Series(np.char.zfill(nnn.astype(str), 3))
    idx = (ddmmyy + num).astype(np.int64).to_numpy() % 31
    check = np.array(list(CHECK_ALPHABET))[idx]
    return (ddmmyy + pd.Series(signs) + num + pd.Series(check)).to_numpy()


def _century_signs(rng: np.random.Generator, years: np.ndarray) -> np.ndarray:
    signs = np.full(len(years), "-", dtype="<U1")
    signs[years < 1900] = "+"
    modern = years >= 2000
    signs[modern] = "A"
    new_1900 = (years >= 1900) & (years < 2000) & (rng.random(len(years)) < 0.03)
    signs[new_1900] = rng.choice(list("YXWVU"), new_1900.sum())
    new_2000 = modern & (rng.random(len(years)) < 0.03)
    signs[new_2000] = rng.choice(list("BCDEF"), new_2000.sum())
    return signs


LAST_BIRTH = WINDOW_END - 30


def _births(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Whether each person is very old (born in the 1890s), and the birth day (days since 1970).

    Days drawn past :data:`LAST_BIRTH` wrap to the start of their year rather than all landing on that one
    day: piled on one date, a population-sized run (5.6M persons) ran out of identity codes for it.
    """
    old = rng.random(n) < 0.003
    years = np.where(old, rng.integers(1890, 1900, n), rng.integers(1920, 2025, n))
    start = (np.array([f"{y}-01-01" for y in years], dtype="datetime64[D]") - EPOCH).astype(int)
    offset = rng.integers(0, 365, n)
    room = np.maximum(LAST_BIRTH - start + 1, 1)
    return old, start + np.where(start + offset > LAST_BIRTH, offset % room, offset)


def _people(rng: np.random.Generator, n: int, alloc: _HetuAllocator) -> pd.DataFrame:
    """Persons of one chunk with their latent conditions."""
    old, birth = _births(rng, n)
    years = _iso(birth).astype("<U4").astype(int)
    sex = rng.integers(1, 3, n)
    temporary = rng.random(n) < 0.005
    signs = _century_signs(rng, years)
    nnn = alloc.allocate(birth, signs, sex, temporary)
    hetu = _hetu_strings(birth, signs, nnn)

    age_ref = REF_YEAR - years
    diabetes = rng.random(n) < 1 / (1 + np.exp(-(-7.0 + 0.07 * age_ref)))
    diabetes &= age_ref > 25
    cancer = rng.random(n) < np.clip(0.0006 * np.maximum(age_ref - 30, 0), 0, 0.06)
    mi = rng.random(n) < np.clip((0.0005 * np.maximum(age_ref - 40, 0)) * np.where(diabetes, 2.5, 1.0), 0, 0.2)

    # Gompertz mortality from max(birth, window start), hazard raised by diabetes.
    t0 = np.maximum(birth, WINDOW_START)
    age0 = (t0 - birth) / 365.25
    b = np.exp(-10.2) * np.where(diabetes, 1.6, 1.0) * np.where(cancer, 3.0, 1.0)
    c = 0.09
    u = rng.random(n)
    t_years = np.log1p(-c * np.log(u) / (b * np.exp(c * age0))) / c
    death = t0 + (t_years * 365.25).astype(np.int64)
    dead = death <= WINDOW_END
    death = np.where(old, WINDOW_START + rng.integers(0, 2000, n), death)
    dead |= old
    death = np.where(dead, death, -1)
    end = np.where(dead, death, WINDOW_END)
    onset = np.maximum(t0, WINDOW_START + rng.integers(0, 8000, n))
    diabetes &= onset < end - 30
    mi_date = onset + rng.integers(0, 3000, n)
    mi &= mi_date < end
    cancer_date = np.maximum(t0, WINDOW_START + rng.integers(0, 9000, n))
    cancer &= cancer_date < end
    return pd.DataFrame({
        "hetu": hetu, "sex": sex, "birth": birth, "death": death, "t0": t0, "end": end,
        "diabetes": diabetes, "onset": onset, "mi": mi, "mi_date": mi_date,
        "cancer": cancer, "cancer_date": cancer_date, "cancer_site": rng.integers(0, len(CANCER_SITES), n),
        "temporary": temporary,
    })


def _events(rng: np.random.Generator, who: np.ndarray, start: np.ndarray, end: np.ndarray,
            rate_per_year: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Poisson event counts per person; returns (person index per event, event day)."""
    span = np.maximum(end - start, 0)
    counts = rng.poisson(rate_per_year * span / 365.25)
    idx = np.repeat(who, counts)
    s, e = np.repeat(start, counts), np.repeat(span, counts)
    day = s + (rng.random(len(idx)) * e).astype(np.int64)
    return idx, day


def _population(p: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    muni = table_rows("municipality")
    codes = np.array([r["code"] for r in muni])
    weights = np.linspace(3.0, 1.0, len(codes))
    weights[0] = 12.0
    weights /= weights.sum()
    death = p["death"].to_numpy()
    death_s = pd.Series(_iso(np.maximum(death, 0)))
    death_s[death < 0] = ""
    return pd.DataFrame({
        "hetu": p["hetu"], "sex": p["sex"].astype(str), "birth_date": _iso(p["birth"].to_numpy()),
        "municipality": rng.choice(codes, len(p), p=weights), "death_date": death_s.to_numpy(),
    })


def _hilmo(p: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    n = len(p)
    age = (p["t0"] - p["birth"]).to_numpy() / 365.25
    who, day = _events(rng, np.arange(n), p["t0"].to_numpy(), p["end"].to_numpy(), 0.06 + age / 400)
    dg = rng.choice(COMMON_HILMO_DG, len(who)).astype(object)
    combo = rng.random(len(who)) < 0.04
    dg[combo] = rng.choice(COMBINATION_DG, combo.sum())
    parts = [(who, day, dg)]
    d = np.flatnonzero(p["diabetes"].to_numpy())
    if len(d):
        dw, dday = _events(rng, d, p["onset"].to_numpy()[d], p["end"].to_numpy()[d], np.full(len(d), 0.25))
        dw = np.concatenate([d, dw])
        dday = np.concatenate([p["onset"].to_numpy()[d], dday])
        ddg = rng.choice(np.array(["E119", "E119", "E118", "E116", "E114+G632", "E113+H360", "E1190"]), len(dw))
        parts.append((dw, dday, ddg))
    m = np.flatnonzero(p["mi"].to_numpy())
    if len(m):
        parts.append((m, p["mi_date"].to_numpy()[m], rng.choice(np.array(["I219", "I214", "I210"]), len(m))))
    c = np.flatnonzero(p["cancer"].to_numpy())
    if len(c):
        site_dg = np.array([s[2] for s in CANCER_SITES])[p["cancer_site"].to_numpy()[c]]
        parts.append((c, p["cancer_date"].to_numpy()[c] + 5, site_dg))
    who = np.concatenate([x[0] for x in parts])
    day = np.concatenate([x[1] for x in parts])
    dg = np.concatenate([x[2] for x in parts])
    los = rng.geometric(0.35, len(who)) - 1
    discharge = np.minimum(day + los, np.maximum(p["end"].to_numpy()[who], day))
    secondary = np.where(rng.random(len(who)) < 0.3, rng.choice(COMMON_HILMO_DG, len(who)), "")
    secondary = np.where(p["diabetes"].to_numpy()[who] & (rng.random(len(who)) < 0.3), "E119", secondary)
    proc = np.where(rng.random(len(who)) < 0.45, rng.choice(PROCEDURES, len(who)), "")
    return _frame(p, who, day, {
        "admission_date": _iso(day), "discharge_date": _iso(discharge), "main_dg": dg,
        "secondary_dg": secondary, "procedure": proc, "provider": rng.choice(PROVIDERS, len(who)),
    })


def _avohilmo(p: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    n = len(p)
    age = (p["t0"] - p["birth"]).to_numpy() / 365.25
    who, day = _events(rng, np.arange(n), p["t0"].to_numpy(), p["end"].to_numpy(), 0.2 + age / 150)
    icpc = rng.random(len(who)) < 0.4
    reason = np.where(icpc, rng.choice(ICPC2_COMMON, len(who)), rng.choice(ICD_AVO_COMMON, len(who)))
    d = np.flatnonzero(p["diabetes"].to_numpy())
    dw, dday = _events(rng, d, p["onset"].to_numpy()[d], p["end"].to_numpy()[d], np.full(len(d), 2.0))
    dicpc = rng.random(len(dw)) < 0.4
    who = np.concatenate([who, dw])
    day = np.concatenate([day, dday])
    icpc = np.concatenate([icpc, dicpc])
    reason = np.concatenate([reason, np.where(dicpc, "T90", "E119")])
    return _frame(p, who, day, {
        "visit_date": _iso(day), "reason_system": np.where(icpc, "ICPC2", "ICD10"), "reason": reason,
        "service_type": rng.choice(SERVICE_TYPES, len(who)), "professional": rng.choice(PROFESSIONALS, len(who)),
    })


def _kela(p: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    n = len(p)
    who, day = _events(rng, np.arange(n), p["t0"].to_numpy(), p["end"].to_numpy(), np.full(n, 0.5))
    atc = rng.choice(GENERAL_ATC, len(who))
    parts = [(who, day, atc)]
    d = np.flatnonzero(p["diabetes"].to_numpy())
    for code, rate, share in (("A10BA02", 4.0, 1.0), ("C10AA05", 3.0, 0.5), ("A10BK03", 3.0, 0.15)):
        sel = d[rng.random(len(d)) < share]
        w, dd = _events(rng, sel, p["onset"].to_numpy()[sel] + 1, p["end"].to_numpy()[sel], np.full(len(sel), rate))
        parts.append((w, dd, np.full(len(w), code)))
    m = np.flatnonzero(p["mi"].to_numpy())
    for code in ("B01AC06", "C07AB02", "C10AA07"):
        w, dd = _events(rng, m, p["mi_date"].to_numpy()[m] + 3, p["end"].to_numpy()[m], np.full(len(m), 3.0))
        parts.append((w, dd, np.full(len(w), code)))
    c = np.flatnonzero(p["cancer"].to_numpy() & (p["cancer_site"].to_numpy() == 0))
    w, dd = _events(rng, c, p["cancer_date"].to_numpy()[c] + 30, p["end"].to_numpy()[c], np.full(len(c), 4.0))
    parts.append((w, dd, np.full(len(w), "L02BA01")))
    who = np.concatenate([x[0] for x in parts])
    day = np.concatenate([x[1] for x in parts])
    atc = np.concatenate([x[2] for x in parts])
    packages = rng.integers(1, 4, len(who))
    packages[rng.random(len(who)) < 0.002] = -1
    price = np.array([ATC_PRICE[a] for a in atc]) if len(atc) else np.zeros(0)
    cost = price * packages
    reimb = cost * rng.choice(np.array([0.4, 0.65, 1.0]), len(who), p=[0.6, 0.3, 0.1])
    ddd = packages * rng.choice(np.array([30.0, 50.0, 90.0, 100.0]), len(who))
    vnro = np.array([_vnro(a) for a in atc]) if len(atc) else np.zeros(0, dtype="<U6")
    return _frame(p, who, day, {
        "purchase_date": _finnish_date(day).to_numpy(), "atc": atc, "vnro": vnro,
        "packages": packages.astype(str), "cost": _money(cost).str.replace(".", ",").to_numpy(),
        "reimbursement": _money(reimb).str.replace(".", ",").to_numpy(),
        "ddd": pd.Series(np.char.mod("%.1f", ddd)).str.replace(".", ",").to_numpy(),
    })


def _causes_of_death(p: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    who = np.flatnonzero(p["death"].to_numpy() >= 0)
    cause = rng.choice(DEATH_CAUSES_OTHER, len(who))
    mi = p["mi"].to_numpy()[who] & (rng.random(len(who)) < 0.6)
    cause[mi] = "I219"
    can = p["cancer"].to_numpy()[who] & (rng.random(len(who)) < 0.7)
    site_dg = np.array([s[2] for s in CANCER_SITES])[p["cancer_site"].to_numpy()[who]]
    cause[can] = site_dg[can]
    immediate = np.where(rng.random(len(who)) < 0.5, rng.choice(np.array(["J189", "I469", "R570", "A419"]),
                                                                  len(who)), "")
    day = p["death"].to_numpy()[who]
    return _frame(p, who, day, {
        "death_date": _iso(day), "underlying_cause": cause, "immediate_cause": immediate,
    })


def _cancer(p: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    who = np.flatnonzero(p["cancer"].to_numpy())
    sites = p["cancer_site"].to_numpy()[who]
    day = p["cancer_date"].to_numpy()[who]
    return _frame(p, who, day, {
        "diagnosis_date": _iso(day), "topography": np.array([CANCER_SITES[s][0] for s in sites], dtype=object),
        "morphology": np.array([CANCER_SITES[s][1] for s in sites], dtype=object),
        "behaviour": np.full(len(who), "3"),
    })


def _frame(p: pd.DataFrame, who: np.ndarray, day: np.ndarray, cols: dict) -> pd.DataFrame:
    df = pd.DataFrame({"hetu": p["hetu"].to_numpy()[who], **cols})
    df["_order"] = who * 100000 + (day - day.min() if len(day) else day)
    df = df.sort_values("_order", kind="stable").drop(columns="_order")
    return df.drop_duplicates().reset_index(drop=True)


GENERATORS: dict[str, Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]] = {
    "population": _population, "hilmo": _hilmo, "avohilmo": _avohilmo, "kela_purchases": _kela,
    "causes_of_death": _causes_of_death, "cancer": _cancer,
}


def _lines(df: pd.DataFrame, schema: RegistrySchema) -> list[str]:
    cols = [df[c].astype(str) for c in schema.names]
    return cols[0].str.cat(cols[1:], sep=schema.delimiter).tolist() if len(df) else []


def _inject(lines: list[str], schema: RegistrySchema, rate: float,
            rng: np.random.Generator) -> tuple[bytes, int, list[tuple[str, bytes]]]:
    """Apply defects to a chunk's lines.

    Returns the chunk's bytes, its number of lines and ``(kind, line bytes)`` for each defect.
    """
    n = len(lines)
    chosen = np.flatnonzero(rng.random(n) < rate) if rate > 0 else np.array([], dtype=int)
    kinds = list(DEFECT_REASONS)
    if schema.registry != "avohilmo":
        kinds.remove("wrong_encoding")  # only Avohilmo carries free text that can be mis-encoded
    picked = rng.choice(kinds, len(chosen)).tolist() if len(chosen) else []
    target = DEFECT_TARGETS[schema.registry]
    d = schema.delimiter
    names = schema.names
    truth: list[tuple[str, bytes]] = []
    pieces: list[bytes] = []
    count = n
    prev = 0
    for i, kind in zip(chosen.tolist(), picked, strict=True):
        line = lines[i]
        fields = line.split(d)
        if fields[0][7:10] >= "900":
            continue  # a temporary identity code is quarantined as such; keep one reason per line
        if kind == "bad_control_char":
            good = fields[0][-1]
            fields[0] = fields[0][:-1] + next(ch for ch in CHECK_ALPHABET[::-1] if ch != good)
        elif kind == "impossible_date":
            fields[names.index(target["date"])] = "30.2.2019" if schema.date_format == "d.M.yyyy" else "2019-02-30"
        elif kind == "unknown_code":
            fields[names.index(target["code"])] = target["unknown"]
        elif kind == "missing_required":
            fields[names.index(target["required"])] = ""
        elif kind == "truncated_line":
            fields = fields[: int(rng.integers(1, len(fields)))]
        if kind == "wrong_encoding":
            if all(ord(ch) < 128 for ch in line):
                continue  # nothing to mis-encode on this line: leave it as it is
            raw = line.encode("latin-1")
        else:
            raw = d.join(fields).encode("utf-8")
        if i > prev:
            pieces.append(("\n".join(lines[prev:i]) + "\n").encode("utf-8"))
        if kind == "duplicate_row":
            pieces.append(raw + b"\n")  # the original stays valid; the copy is the defect
            count += 1
        pieces.append(raw + b"\n")
        prev = i + 1
        truth.append((kind, raw))
    if prev < n:
        pieces.append(("\n".join(lines[prev:]) + "\n").encode("utf-8"))
    return b"".join(pieces), count, truth


def _fhir_chunk(handles: dict, frames: dict[str, pd.DataFrame], first: int, chunk: int, rate: float,
                rng: np.random.Generator) -> tuple[dict[str, int], list[tuple[str, str, bytes]]]:
    """The chunk's persons, Hilmo episodes and Kela purchases as FHIR resources (:mod:`synthetic_fhir`)."""
    plines, pid, phetu = SF.patients(frames["population"], first)
    ids = dict(zip(phetu, pid, strict=True))
    encounters, conditions = SF.encounters_and_conditions(frames["hilmo"], ids, chunk, rng)
    dispenses = SF.dispenses(frames["kela_purchases"], ids, chunk, rng)
    hilmo_hetu = frames["hilmo"]["hetu"].astype(str)
    counts: dict[str, int] = {}
    truth: list[tuple[str, str, bytes]] = []
    for resource, lines, hetu in (("Patient", plines, phetu), ("Encounter", encounters, hilmo_hetu),
                                  ("Condition", conditions, hilmo_hetu),
                                  ("MedicationDispense", dispenses, frames["kela_purchases"]["hetu"].astype(str))):
        counts[resource], t = SF.write_chunk(handles, resource, lines, SF.temporary_codes(hetu.reset_index(drop=True)),
                                             rate, rng)
        truth += t
    return counts, truth


def generate(out_dir: str | Path, *, persons: int, seed: int = 1, defect_rate: float = 0.0,
             chunk_size: int = 25_000, progress: Callable[[int], None] | None = None,
             fhir: bool = False) -> SynthSummary:
    """Write synthetic extracts for ``persons`` persons to ``out_dir``; see the module docstring.

    With ``fhir``, also Kanta's FHIR bulk export of the same persons (:mod:`pseudonymise.synthetic_fhir`); the
    CSV extracts are byte-identical with or without it."""
    if persons < 1:
        raise ValueError("persons must be at least 1")
    if not 0 <= defect_rate < 0.5:
        raise ValueError("defect rate must be in [0, 0.5)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    schemas = {r: load_schema(r) for r in CSV_REGISTRIES}
    handles = {r: open(out / s.file, "wb") for r, s in schemas.items()}  # noqa: SIM115
    fhir_handles = SF.open_export(out) if fhir else {}
    rows: Counter = Counter()
    defects: Counter = Counter()
    truth_path = out / "ground_truth.csv"
    master = np.random.SeedSequence(seed)
    alloc = _HetuAllocator(np.random.default_rng(master.spawn(1)[0]))
    try:
        with open(truth_path, "w", newline="", encoding="utf-8") as tf:
            truth_writer = csv.writer(tf)
            truth_writer.writerow(["registry", "defect", "expected_reason", "line_sha256"])
            for r, s in schemas.items():
                handles[r].write((s.header + "\n").encode("utf-8"))
            done = 0
            chunk_index = 0
            while done < persons:
                n = min(chunk_size, persons - done)
                rng = np.random.default_rng([seed, chunk_index])
                people = _people(rng, n, alloc)
                frames = {}
                for r, s in schemas.items():
                    df = frames[r] = GENERATORS[r](people, rng)
                    data, count, truth = _inject(_lines(df, s), s, defect_rate, rng)
                    handles[r].write(data)
                    rows[r] += count
                    for kind, raw in truth:
                        defects[kind] += 1
                        truth_writer.writerow([r, kind, DEFECT_REASONS[kind], hashlib.sha256(raw).hexdigest()])
                if fhir:
                    counts, fhir_truth = _fhir_chunk(fhir_handles, frames, done, chunk_index, defect_rate,
                                                     np.random.default_rng([seed, chunk_index, 1]))
                    for resource, n_lines in counts.items():
                        rows[SF.FILES[resource][0]] += n_lines
                    for registry, kind, raw in fhir_truth:
                        defects[f"fhir_{kind}"] += 1
                        truth_writer.writerow([registry, kind, SF.FHIR_DEFECT_REASONS[kind],
                                               hashlib.sha256(raw).hexdigest()])
                done += n
                chunk_index += 1
                if progress:
                    progress(n)
    finally:
        for h in [*handles.values(), *fhir_handles.values()]:
            h.close()
    if fhir:
        SF.write_manifest(out, {res: rows[reg] for res, (reg, _f) in SF.FILES.items()}, "2025-01-01T00:00:00+02:00")
    summary = SynthSummary(persons, dict(rows), dict(defects), out)
    (out / "synth_summary.json").write_text(json.dumps(
        {"persons": persons, "seed": seed, "defect_rate": defect_rate, "rows": dict(rows),
         "defects": dict(defects)}, indent=2, sort_keys=True) + "\n")
    return summary
