"""Writes notebooks/*.ipynb, the example analyses copied into each workspace (outputs empty).

Run `.venv/bin/python scripts/make_example_notebooks.py` after editing a notebook here; tests/e2e/test_notebooks.py
runs each one in a workspace kernel."""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

META = {"kernelspec": {"name": "toisio-offline", "display_name": "Python (no network, read-only data)",
                       "language": "python"}, "language_info": {"name": "python"}}

def nb(cells):
    n = new_notebook(cells=cells, metadata=META)
    for i, c in enumerate(n.cells):
        c.id = f"cell-{i:02d}"
    return n

setup = '''import json
import os
from pathlib import Path

import pandas as pd

DATA = Path(os.environ["TOISIO_DATA"])  # the permit's delivery, read-only
OUT = Path(os.environ["TOISIO_SCRATCH"])  # your scratch space; outputs leave only through the airlock
OUT.mkdir(exist_ok=True)
manifest = json.loads((DATA / "manifest.json").read_text())
persons = pd.read_parquet(DATA / "persons")'''

cohort = nb([
    new_markdown_cell("# Cohort description\n\nStart here. The permit's delivery is mounted read-only at "
                      "`$TOISIO_DATA`: one Parquet dataset per registry plus `persons` (one row per cohort member, "
                      "with `cohort_role`, `match_set` and `index_date`) and the `manifest.json` that describes it. "
                      "Everything you make goes in `scratch/`; nothing leaves the workspace except through an "
                      "output request, which is checked automatically and by two output checkers."),
    new_code_cell(setup),
    new_markdown_cell("## What was delivered\n\nThe manifest lists each dataset, its rows and its schema, the "
                      "permit and the key *version* used for the pseudonyms (never the key)."),
    new_code_cell('''print(f"permit {manifest['permit_id']}, pseudonym key {manifest['key']['key_id']}")
pd.DataFrame([{"dataset": name, "rows": d["rows"], "columns": len(d["schema"])}
              for name, d in manifest["datasets"].items()]).set_index("dataset")'''),
    new_markdown_cell("## Cases and matched controls\n\nCases have the cohort's diagnosis in the cohort period; "
                      "each has controls of the same birth year and sex who were alive at the case's index date."),
    new_code_cell('''roles = persons["cohort_role"].value_counts()
per_case = persons[persons["cohort_role"] == "control"].groupby("match_set").size()
print(roles.to_string())
print(f"controls per case: median {per_case.median():.0f}, min {per_case.min()}, max {per_case.max()}")
assert roles.get("case", 0) > 0, "the cohort has no cases"'''),
    new_markdown_cell("## A table ready for an output request\n\n`safe_crosstab` counts distinct persons and "
                      "applies the permit's disclosure rules (minimum cell size, dominance, secondary suppression "
                      "and rounding) before you see the numbers, so the table you save is the table the output "
                      "checkers will review."),
    new_code_cell('''from secure_env.analyst import safe_crosstab

table = safe_crosstab(persons, "age_band", "cohort_role")
table.to_csv(OUT / "cohort_by_age_band.csv")
print(f"automatic check: {table.report['status']}; suppressed {table.suppressed_primary} primary, "
      f"{table.suppressed_secondary} secondary cells")
table.table'''),
    new_markdown_cell("## The same with ACRO's interface, verified by the airlock\n\nIf you know ACRO, "
                      "`secure_env.analyst.ACRO` is the same interface with this service's rules. A table made "
                      "from a dataset read with `acro.read` carries its specification: when you ask for its "
                      "release, the airlock runs it again on the delivered data and marks it *verified*. "
                      "`finalise` writes the outputs, their specifications and one `results.json`."),
    new_code_cell('''from secure_env.analyst import ACRO

acro = ACRO(suppress=True)
people = acro.read("persons")
acro.crosstab(people.age_band, people.cohort_role, margins=True)
acro.finalise(OUT / "acro")
print(sorted(p.name for p in (OUT / "acro").iterdir()))
acro.results["output_0"]["table"]'''),
    new_markdown_cell("## Differentially private statistics\n\n`toisio_dp` asks the service's "
                      "DP query service: it computes the statistic on the delivered data, charges the permit's "
                      "privacy budget first and returns the answer with a receipt; `answer.save(...)` writes a file "
                      "the airlock can verify. The decider sets the budget; without one, queries are refused."),
    new_code_cell('''from secure_env.workspace import dp_client as toisio_dp  # (a workspace kernel has it already)

try:
    print(toisio_dp.budget())
    answer = toisio_dp.count("persons", epsilon=0.1, where={"cohort_role": "case"})
    answer.save(OUT / "dp_cases.json")
    print(answer)
except toisio_dp.DpQueryError as e:
    print(f"no DP query here: {e}")'''),
])

survival = nb([
    new_markdown_cell("# Mortality after a type 2 diabetes diagnosis: a matched cohort analysis\n\n"
                      "Follow-up runs from the index date (the case's first diagnosis; the same date for its "
                      "controls) to death or the end of the data. We estimate survival curves by cohort role "
                      "(Kaplan-Meier) and the hazard ratio for death, cases against controls, from a Cox model "
                      "stratified by match set (so the matching on birth year and sex is kept)."),
    new_code_cell(setup),
    new_code_cell('''import numpy as np
from statsmodels.duration.hazard_regression import PHReg
from statsmodels.duration.survfunc import SurvfuncRight'''),
    new_markdown_cell("## Follow-up time\n\nDates in this delivery may be coarsened to months or years (the "
                      "permit's generalisation rules); time is in years."),
    new_code_cell('''end_of_data = max(pd.to_datetime(persons["index_date"]).max(), pd.Timestamp("2023-12-31"))
df = persons.assign(index_date=pd.to_datetime(persons["index_date"]),
                    death_date=pd.to_datetime(persons["death_date"]))
df["died"] = df["death_date"].notna() & (df["death_date"] <= end_of_data)
df["exit"] = df["death_date"].where(df["died"], end_of_data)
df["years"] = (df["exit"] - df["index_date"]).dt.days / 365.25
df["case"] = (df["cohort_role"] == "case").astype(int)
excluded = int((df["years"] < 0).sum())
df = df[df["years"] >= 0].copy()
df["years"] = df["years"].clip(lower=1 / 365.25)  # a death in the index month counts as early follow-up
print(f"{len(df)} persons, {int(df['died'].sum())} deaths, {df['years'].sum():,.0f} person-years; "
      f"{excluded} excluded (exit before index date)")'''),
    new_markdown_cell("## Kaplan-Meier survival by cohort role"),
    new_code_cell('''import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 4.5))
for role, group in df.groupby("cohort_role"):
    sf = SurvfuncRight(group["years"], group["died"].astype(int))
    ax.step(sf.surv_times, sf.surv_prob, where="post", label=f"{role} (n={len(group)})")
ax.set_xlabel("years since index date")
ax.set_ylabel("survival probability")
ax.set_ylim(0, 1.02)
ax.legend()
ax.set_title("Survival after the index date")
fig.savefig(OUT / "km_by_role.png", dpi=120, bbox_inches="tight")'''),
    new_markdown_cell("## Cox regression, stratified by match set"),
    new_code_cell('''model = PHReg.from_formula("years ~ case", data=df, status=df["died"].astype(int),
                           strata=df["match_set"])
fit = model.fit()
hr = np.exp(fit.params[0])
lo, hi = np.exp(fit.conf_int()[0])
print(f"hazard ratio for death, cases vs matched controls: {hr:.2f} (95% CI {lo:.2f}-{hi:.2f}), "
      f"p = {fit.pvalues[0]:.3g}")
assert np.isfinite(hr) and lo < hr < hi'''),
    new_markdown_cell("Regression results leave the workspace through the airlock too: "
                      "`secure_env.analyst.safe_regression_summary` checks the residual degrees of freedom before "
                      "a coefficient table is released."),
    new_code_cell('''from secure_env.analyst import safe_regression_summary

coef = pd.DataFrame({"hazard_ratio": [hr], "ci_low": [lo], "ci_high": [hi], "p": [fit.pvalues[0]]},
                    index=["case vs control"])
summary = safe_regression_summary(coef, residual_df=int(df["died"].sum()) - 1)
summary.to_csv(OUT / "cox_summary.csv")
print(f"automatic check: {summary.report['status']}")
summary.table'''),
])

figure = nb([
    new_markdown_cell("# Metformin use over time: a figure\n\nType 2 diabetes usually goes with metformin "
                      "(ATC A10BA02) purchases. This notebook draws the share of each group buying metformin per "
                      "year from the Kela purchases dataset, if the permit includes it."),
    new_code_cell(setup),
    new_code_cell('''import matplotlib.pyplot as plt

if not (DATA / "kela_purchases").exists():
    raise SystemExit("this permit has no Kela purchases dataset")
kela = pd.read_parquet(DATA / "kela_purchases", columns=["pseudonym", "purchase_date", "atc"])
kela["year"] = pd.to_datetime(kela["purchase_date"]).dt.year
metformin = kela[kela["atc"] == "A10BA02"].drop_duplicates(["pseudonym", "year"])
users = metformin.merge(persons[["pseudonym", "cohort_role"]], on="pseudonym")
by_year = users.groupby(["year", "cohort_role"]).size().unstack(fill_value=0)
share = by_year / persons["cohort_role"].value_counts()
print(f"{len(metformin):,} person-years with a metformin purchase")
share.round(3).tail()'''),
    new_code_cell('''fig, ax = plt.subplots(figsize=(7, 4.5))
for role in share.columns:
    ax.plot(share.index, 100 * share[role], marker="o", label=role)
ax.set_xlabel("year")
ax.set_ylabel("% of the group buying metformin")
ax.set_title("Metformin (A10BA02) purchasers per year")
ax.legend()
fig.savefig(OUT / "metformin_by_year.png", dpi=120, bbox_inches="tight")
assert share.get("case", pd.Series([0])).max() > share.get("control", pd.Series([0])).max()'''),
    new_markdown_cell("A figure is an output like any other: before requesting its release, save the counts "
                      "behind it as a `safe_crosstab` table so the checkers can verify every plotted number."),
])

for name, n in [("01_cohort_description.ipynb", cohort), ("02_survival_after_diagnosis.ipynb", survival),
                ("03_metformin_figure.ipynb", figure)]:
    nbformat.validate(n)
    nbformat.write(n, Path(__file__).resolve().parent.parent / "notebooks" / name)
