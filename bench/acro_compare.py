"""Side-by-side: this airlock's checks and ACRO's (SACRO) on a corpus of tables from the synthetic registries.

Both use ACRO's default parameters (the ``acro`` profile: minimum 10, N-K 2/0.9, p% 10, zeros
disclosive).  Every table is built from one row per person (magnitude tables from each person's
total), so that ACRO's record counts and our person counts mean the same thing.  For every cell
the verdicts (pass or fail) of the rules both implement - minimum count, N-K and p% dominance, negative
contributions - are compared; every disagreement is listed with its explanation.  The cells this airlock fails by
rules ACRO does not have (a maximum as one person's value, a standard deviation's degrees of freedom) are counted
per table.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from pseudonymise.synthetic import generate
from secure_env.airlock.disclosure import build_table, check_table
from secure_env.airlock.profiles import profile

ACRO_RULES = {"MinimumThresholdCheck": "min_count", "NKCheck": "dominance_nk", "PPercentCheck": "dominance_p_percent",
              "threshold": "min_count", "nk-rule": "dominance_nk", "p-ratio": "dominance_p_percent",
              "negative": "negative"}
OUR_RULES = {"fewer than the minimum": "min_count", "zero cell": "zeros", "N-K dominance": "dominance_nk",
             "p% rule": "dominance_p_percent", "missing value": "missing", "negative or mixed-sign": "negative",
             "one person's own value": "individual_value", "degrees of freedom below": "degrees_of_freedom"}
#: the rules both implement (compared cell by cell); this airlock's own rules are listed where they add a failure
SHARED = {"min_count", "dominance_nk", "dominance_p_percent", "negative"}


def _corpus(persons: int, work: Path) -> list[tuple[str, pd.DataFrame, str, str, str, str | None]]:
    d = work / "extracts"
    generate(d, persons=persons, seed=99)
    pop = pd.read_csv(d / "population.csv", dtype=str, keep_default_na=False)
    pop["birth_decade"] = pop["birth_date"].str[:3] + "0s"
    pop["died"] = np.where(pop["death_date"] != "", pop["death_date"].str[:4], "alive")
    pop = pop.rename(columns={"hetu": "pseudonym"})
    hilmo = pd.read_csv(d / "hilmo.csv", dtype=str, keep_default_na=False).rename(columns={"hetu": "pseudonym"})
    first_dg = hilmo.assign(dg3=hilmo["main_dg"].str[:3]).drop_duplicates("pseudonym")[["pseudonym", "dg3"]]
    first_dg = first_dg.merge(pop[["pseudonym", "sex"]], on="pseudonym")
    kela = pd.read_csv(d / "kela_purchases.csv", sep=";", dtype=str, keep_default_na=False)
    kela["cost"] = kela["cost"].str.replace(",", ".").astype(float)
    per_person = kela.groupby(["hetu", "atc"], as_index=False)["cost"].sum().rename(columns={"hetu": "pseudonym"})
    per_person = per_person.merge(pop[["pseudonym", "sex"]], on="pseudonym")
    per_person["cost"] = per_person["cost"].clip(lower=0)
    refunds = per_person.copy()
    rng = np.random.default_rng(7)
    refunds.loc[rng.random(len(refunds)) < 0.03, "cost"] *= -1  # returned purchases: negative contributions
    small = per_person.merge(pop[["pseudonym", "municipality", "died"]], on="pseudonym")
    small = small[small["died"] != "alive"].groupby(["pseudonym", "municipality", "atc"], as_index=False)["cost"].sum()
    return [
        ("year of death x municipality", pop[pop["died"] != "alive"], "died", "municipality", "count", None),
        ("cost of the deceased by ATC x municipality (sum)", small, "atc", "municipality", "sum", "cost"),
        ("cost of the deceased by ATC x municipality (mean)", small, "atc", "municipality", "mean", "cost"),
        ("municipality x sex", pop, "municipality", "sex", "count", None),
        ("birth decade x sex", pop, "birth_decade", "sex", "count", None),
        ("year of death x sex", pop, "died", "sex", "count", None),
        ("first Hilmo diagnosis (3 chars) x sex", first_dg, "dg3", "sex", "count", None),
        ("purchase cost by ATC x sex (sum)", per_person, "atc", "sex", "sum", "cost"),
        ("purchase cost by ATC x sex (mean)", per_person, "atc", "sex", "mean", "cost"),
        ("purchase cost by ATC x sex (median)", per_person, "atc", "sex", "median", "cost"),
        ("purchase cost by ATC x sex (std)", per_person, "atc", "sex", "std", "cost"),
        ("purchase cost by ATC x sex (max)", per_person, "atc", "sex", "max", "cost"),
        ("purchase cost with refunds by ATC x sex (sum)", refunds, "atc", "sex", "sum", "cost"),
    ]


def _acro_outcome(df: pd.DataFrame, rows: str, cols: str, statistic: str, value: str | None) -> pd.DataFrame:
    from acro import ACRO

    logging.getLogger("acro").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acro = ACRO(suppress=False)
        if statistic == "count":
            acro.crosstab(df[rows], df[cols])
        else:
            acro.crosstab(df[rows], df[cols], values=df[value], aggfunc=statistic)
    record = acro.results.results[list(acro.results.results)[-1]]
    return record.outcome


def _rules_from(text: str, mapping: dict[str, str]) -> set[str]:
    return {rule for key, rule in mapping.items() if key in text}


def _explain(ours: set[str], theirs: set[str], statistic: str, count: float, table_has_negatives: bool = False
             ) -> str:
    only_ours, only_theirs = ours - theirs, theirs - ours
    if table_has_negatives and only_ours <= {"dominance_nk", "dominance_p_percent"} and not only_theirs:
        return ("ACRO checks no dominance anywhere in a table that holds a negative value; this airlock still "
                "checks the cells without one")
    if "dominance_nk" in only_theirs | only_ours or "dominance_p_percent" in only_theirs | only_ours:
        return ("dominance on a cell where the contributors differ: ACRO applies N-K and p% to the cell's records, "
                "this airlock to each person's total (the same here, one row per person), so a difference points "
                "at how ties and negative or zero contributions are handled")
    if "negative" in only_theirs | only_ours:
        return ("negative contributions: both send a cell with a negative contribution to review; ACRO flags the "
                "whole table's dominance as undefined once any cell has one, this airlock only those cells")
    if "min_count" in only_ours and statistic != "count":
        return "this airlock also applies the minimum count to the persons behind a mean or sum cell"
    if "min_count" in only_theirs and count == 0:
        return "ACRO counts an empty cell below the threshold; this airlock reports it as a zero cell"
    return f"not explained automatically (ours {sorted(ours)}, ACRO {sorted(theirs)}, count {count})"


def compare(persons: int = 20_000) -> dict:
    p = profile("acro")
    tables = []
    agree_total = cells_total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, df, rows, cols, statistic, value in _corpus(persons, Path(tmp)):
            t = build_table(df, [rows], [cols], aggfunc=statistic, values=value, top_m=3)
            ours = check_table(t, p)
            own_rules = {}
            for c in ours.cells:
                for rule in _rules_from(" ".join(c.reasons), OUR_RULES) - SHARED - {"zeros", "missing"}:
                    own_rules[rule] = own_rules.get(rule, 0) + 1
            our_cells = {(str(c.row), str(c.column)): _rules_from(" ".join(c.reasons), OUR_RULES) for c in ours.cells}
            outcome = _acro_outcome(df, rows, cols, statistic, value)
            disagreements = []
            negatives = t.negatives is not None and bool((t.negatives.to_numpy() > 0).any())
            agree = 0
            both_fail = 0
            shared = SHARED
            for r in t.values.index:
                for c in t.values.columns:
                    mine = our_cells.get((str(r), str(c)), set()) - {"zeros", "missing"}
                    count = float(t.counts.loc[r, c])
                    if count == 0 and "zeros" in our_cells.get((str(r), str(c)), set()):
                        mine = mine | {"min_count"}  # a disclosive zero fails like a small count (ACRO's view)
                    try:
                        text = str(outcome.loc[r, c])
                    except KeyError:
                        text = "absent"
                    theirs = _rules_from(text, ACRO_RULES) & shared
                    dominance = {"dominance_nk", "dominance_p_percent"}
                    if "negative" in mine and theirs and theirs <= dominance:
                        # ACRO reports a cell with a negative value under its dominance checks (dominance is not
                        # defined there): the same review as this airlock's negative-contribution rule
                        theirs = {"negative"}
                    if (mine & shared) == theirs:
                        agree += 1
                        both_fail += bool(theirs)
                    else:
                        disagreements.append({"row": str(r), "column": str(c), "count": count,
                                              "ours": sorted(mine & shared), "acro": sorted(theirs),
                                              "acro_outcome": text.strip(),
                                              "explanation": _explain(mine & shared, theirs, statistic, count,
                                                                      negatives)})
            n = t.values.size
            tables.append({"table": name, "statistic": statistic, "cells": n, "agree": agree,
                           "failing_in_both": both_fail, "cells_failed_by_rules_acro_does_not_have": own_rules,
                           "disagreements": disagreements})
            agree_total += agree
            cells_total += n
    return {"profile": "acro", "persons": persons, "tables": tables, "cells": cells_total, "agree": agree_total,
            "agreement": round(agree_total / cells_total, 4) if cells_total else None}


def _acro_status(call) -> str:
    """The status ACRO records for the output ``call(acro)`` makes (on ACRO's defaults)."""
    from acro import ACRO

    logging.getLogger("acro").setLevel(logging.ERROR)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        acro = ACRO(suppress=False)
        cwd = os.getcwd()
        os.chdir(tmp)  # ACRO writes a histogram's and a curve's image into the working directory
        try:
            call(acro)
        finally:
            os.chdir(cwd)
    return acro.results.results[list(acro.results.results)[-1]].status


def compare_outputs(seed: int = 11) -> dict:
    """The output kinds beyond tables, as a whole output each: models (ACRO checks residual degrees of freedom;
    this airlock also the records behind each categorical level), histograms (every bin a count) and survival
    tables (every step a count of persons leaving), with ACRO's status and this airlock's side by side."""
    from secure_env.airlock import regression as R
    from secure_env.airlock import survival as S
    from secure_env.airlock.tables import bin_of

    p = profile("acro")
    rng = np.random.default_rng(seed)
    out = []

    def model_data(n: int, rare: int) -> pd.DataFrame:
        g = ["rare"] * rare + list(rng.choice(["a", "b"], n - rare))
        df = pd.DataFrame({"x": rng.normal(size=n), "g": g})
        df["y"] = 2 * df.x + (df.g == "b") + rng.normal(size=n)
        df["event"] = (df.y > df.y.median()).astype(int)
        return df

    for name, df in (("a clean model (500 records)", model_data(500, 100)),
                     ("a level with 4 records", model_data(500, 4)),
                     ("8 records in all (residual df below 10)", model_data(8, 3))):
        for kind, formula in (("ols", "y ~ x + C(g)"), ("logit", "event ~ x + C(g)")):
            try:
                ours = R.check_model(R.fit(kind, formula, df), p).status
            except Exception as e:  # a fit that cannot be made (separation on 8 records) is no output
                ours = f"no output ({type(e).__name__})"
            theirs = _acro_status(lambda a, k=kind, f=formula, d=df: getattr(a, f"{k}r")(f, data=d))
            out.append({"output": f"{kind}: {name}", "ours": ours, "acro": theirs, "agree": ours == theirs,
                        "explanation": "" if ours == theirs else (
                            "records behind a categorical level: a rule ACRO does not have (its model check is "
                            "the residual degrees of freedom)" if "level" in name else "not explained")})
    for name, values in (("ages of 2,000 persons, 10-year bins", rng.integers(0, 100, 2000)),
                         ("ages of 60 persons, 10-year bins", rng.integers(0, 100, 60))):
        edges = tuple(float(e) for e in range(0, 101, 10))
        df = pd.DataFrame({"pseudonym": [f"p{i}" for i in range(len(values))], "age": values.astype(float)})
        df["bin"] = bin_of(df["age"], edges)
        ours = check_table(build_table(df, ["bin"]), p).status
        theirs = _acro_status(lambda a, d=df, e=edges: a.hist(d, "age", bins=list(e), filename="hist.png"))
        out.append({"output": f"histogram: {name}", "ours": ours, "acro": theirs, "agree": ours == theirs,
                    "explanation": "" if ours == theirs else "not explained"})
    for name, n in (("300 persons followed", 300), ("40 persons followed", 40)):
        time = pd.Series(rng.integers(1, 60, n), name="months")
        event = pd.Series(rng.integers(0, 2, n), name="died")
        raw = S.raw_table(time, event)
        ours = S.check(raw, p).status  # the raw table, as ACRO checks what it is given
        theirs = _acro_status(lambda a, t=time, e=event: a.surv_func(t, e, output="table"))
        out.append({"output": f"survival table: {name}", "ours": ours, "acro": theirs, "agree": ours == theirs,
                    "explanation": "" if ours == theirs else "not explained",
                    "ours_after_merging_steps": S.check(S.safe_table(raw, p.min_count), p).status})
    return {"profile": "acro", "outputs": out, "agree": sum(o["agree"] for o in out), "total": len(out)}


if __name__ == "__main__":
    import json

    print(json.dumps(compare(), indent=2))
