"""Models (OLS, logit, probit from a formula): their disclosure checks, and their specification run again.

The checks (ACRO's for model outputs, and the records behind each level): the residual degrees of freedom reach the
profile's minimum; every level of a categorical variable (each dummy column, and the reference level) has at least
``min_count`` records behind it, so that no coefficient describes a handful of persons.  A model fitted by the helper
on a dataset read with ``ACRO.read`` carries its specification; the airlock fits it again on the delivered data and
compares the coefficients (verified) before the checks decide.

Formulas are limited to column names, ``C(...)`` and the operators ``~ + - * :`` (patsy evaluates a formula as
Python, so nothing else is accepted: the airlock fits it on the host).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from secure_env.airlock.disclosure import CheckReport
from secure_env.airlock.profiles import DisclosureProfile

FORMAT = "toisio-model-spec/1"
KINDS = ("ols", "logit", "probit")
#: a column name a formula may hold
NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_TOKEN = re.compile(rf"\s*(?:(?P<name>{NAME})|(?P<num>\d+)|(?P<op>[~+\-*:()]))")


def check_formula(formula: str) -> str:
    """The formula if it holds only column names, ``C(...)``, numbers 0/1 and ``~ + - * :``; else ValueError."""
    pos, names = 0, []
    text = formula.strip()
    if text.count("~") != 1:
        raise ValueError("a formula has one '~' (outcome ~ terms)")
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"formula {formula!r}: {text[pos:pos + 10]!r} is not allowed (column names, C(...), "
                             f"~ + - * : only)")
        if m.group("name"):
            after = text[m.end():].lstrip()
            if after.startswith("(") and m.group("name") != "C":
                raise ValueError(f"formula {formula!r}: only C(...) may be called, not {m.group('name')}(...)")
            names.append(m.group("name"))
        pos = m.end()
    return text


def formula_columns(formula: str) -> list[str]:
    return [n for n in re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", formula) if n != "C"]


class ModelSpec(BaseModel):
    """What a model is: the delivered dataset, the rows kept, the kind and the formula."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["toisio-model-spec/1"] = FORMAT
    dataset: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    where: dict[str, str | int | float | bool] = Field({}, max_length=20)
    kind: Literal["ols", "logit", "probit"]
    formula: str = Field(max_length=1000)

    @field_validator("formula")
    @classmethod
    def _formula(cls, v: str) -> str:
        return check_formula(v)


def fit(kind: str, formula: str, data: pd.DataFrame):
    """The statsmodels results of a model (warnings of a non-converging fit kept out of the notebook's way)."""
    import statsmodels.formula.api as smf

    check_formula(formula)
    missing = [c for c in formula_columns(formula) if c not in data.columns]
    if missing:
        raise ValueError(f"no column {missing[0]!r}; columns: {', '.join(map(str, data.columns))}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = {"ols": smf.ols, "logit": smf.logit, "probit": smf.probit}[kind](formula, data=data)
        return model.fit(disp=0) if kind != "ols" else model.fit()


def summary(results) -> pd.DataFrame:
    """The coefficients' table that leaves (estimate, standard error, statistic, p-value, 95% interval)."""
    ci = results.conf_int()
    out = pd.DataFrame({"coef": results.params, "std_err": results.bse, "statistic": results.tvalues,
                        "p_value": results.pvalues, "ci_low": ci[0], "ci_high": ci[1]})
    out.index.name = "term"
    return out


def check_model(results, prof: DisclosureProfile) -> CheckReport:
    """Residual degrees of freedom, and the records behind each categorical level (reference level included)."""
    findings: list[str] = []
    df_resid = int(round(float(results.df_resid)))
    if df_resid < prof.min_residual_df:
        findings.append(f"residual degrees of freedom {df_resid} below the minimum {prof.min_residual_df}")
    exog = pd.DataFrame(results.model.exog, columns=results.model.exog_names)
    n = len(exog)
    factors: dict[str, list[str]] = {}
    for name in exog.columns:
        m = re.match(r"^(.*)\[T\.(.*)\]$", name)
        if m and ":" not in name:
            factors.setdefault(m.group(1), []).append(name)
    for factor, dummies in factors.items():
        for d in dummies:
            behind = int(exog[d].sum())
            if behind < prof.min_count:
                findings.append(f"level {d}: {behind} records behind it, fewer than the minimum {prof.min_count}")
        reference = n - int(exog[dummies].to_numpy().sum())
        if reference < prof.min_count:
            findings.append(f"the reference level of {factor}: {reference} records, fewer than the minimum "
                            f"{prof.min_count}")
    status = "fail" if findings else "pass"
    return CheckReport(prof.name, status, (), tuple(findings),
                       {"cells": 0, "pass": 0, "review": 0, "fail": len(findings), "residual_df": df_resid})


def write(path: Path, table: pd.DataFrame, spec: ModelSpec | None) -> Path:
    from secure_env.airlock.tables import SPEC_SUFFIX

    path = Path(path)
    table.to_csv(path)
    if spec is not None:
        Path(str(path) + SPEC_SUFFIX).write_text(spec.model_dump_json(indent=2) + "\n")
    return path


def verify(path: Path, spec: ModelSpec, data_dir: Path, prof: DisclosureProfile):
    """Fit the specification again on the delivered data and compare the coefficients' table with the file."""
    from secure_env.airlock.tables import Verification, rows_of

    try:
        results = fit(spec.kind, spec.formula, rows_of(data_dir, spec))  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as e:
        return Verification(False, f"the specification cannot be run again: {e}")
    expected = summary(results)
    try:
        got = pd.read_csv(path, index_col=0)
    except (ValueError, OSError) as e:
        return Verification(False, f"the file does not read as a model's table ({e})")
    if list(got.index.astype(str)) != list(expected.index.astype(str)) or list(got.columns) != list(expected.columns):
        return Verification(False, "its terms or columns differ from the model fitted again")
    if not np.allclose(got.to_numpy(dtype=float), expected.to_numpy(dtype=float), rtol=1e-6, atol=1e-9,
                       equal_nan=True):
        return Verification(False, "its numbers differ from the model fitted again on the delivered data")
    return Verification(True, "the model fitted again on the delivered data gives the same table",
                        check_model(results, prof))
