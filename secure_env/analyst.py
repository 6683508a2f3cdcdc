"""Helpers an analyst calls in a workspace notebook: tables that come back already checked.

``safe_crosstab`` and ``safe_pivot`` build the table from row-level data (so the checks see the
true number of persons behind every cell and the largest contributors), run the permit's
disclosure profile, apply primary and secondary suppression and rounding, and return the
releasable table with its report.  These helpers run inside a workspace's kernel: they never import the
database or any part of the service that could reach it (tests/unit/test_layout.py checks it).
The DP versions are in :class:`secure_env.airlock.dp.DpSession`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from secure_env.airlock.disclosure import (
    Statistic,
    build_table,
    check_regression,
    check_table,
    round_counts,
    suppress,
    table_from_rows,
)
from secure_env.airlock.profiles import profile


@dataclass(frozen=True)
class SafeTable:
    """A checked table: ``table`` is what may be requested for release; ``report`` says why."""

    table: pd.DataFrame
    report: dict
    suppressed_primary: int
    suppressed_secondary: int

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        self.table.to_csv(path)
        return path


def safe_crosstab(df: pd.DataFrame, rows: str, columns: str | None = None, *, statistic: Statistic = "count",
                  value: str | None = None, person: str = "pseudonym",
                  profile_name: str = "toisio-default") -> SafeTable:
    """Counts (or a statistic of ``value``) by ``rows`` x ``columns``, checked and suppressed."""
    prof = profile(profile_name)
    t = table_from_rows(df, rows, columns, statistic=statistic, value=value, person=person,
                        top_m=max(prof.nk_n, 2))
    report = check_table(t, prof)
    released, primary, secondary = suppress(t, report)
    if statistic == "count":
        released = round_counts(released, prof.rounding_base)
    out = report.to_dict()
    out["suppressed"] = {"primary": int(primary.sum()), "secondary": int(secondary.sum())}
    return SafeTable(released, out, int(primary.sum()), int(secondary.sum()))


safe_pivot = safe_crosstab


def safe_describe(df: pd.DataFrame, value: str, by: str, *, person: str = "pseudonym",
                  profile_name: str = "toisio-default") -> SafeTable:
    """Mean of ``value`` by group with the counts behind each mean checked."""
    return safe_crosstab(df, by, None, statistic="mean", value=value, person=person, profile_name=profile_name)


def safe_regression_summary(coefficients: pd.DataFrame, residual_df: int, *,
                            profile_name: str = "toisio-default") -> SafeTable:
    """A model summary: released only if its residual degrees of freedom reach the profile's minimum."""
    report = check_regression(residual_df, profile(profile_name)).to_dict()
    table = coefficients if report["status"] == "pass" else coefficients.map(lambda _: np.nan)
    return SafeTable(table, report, 0 if report["status"] == "pass" else int(coefficients.size), 0)


class ACRO:
    """ACRO's interface, checked by this service's rules: an analyst who knows ACRO changes one import.

    >>> from secure_env.analyst import ACRO                       # doctest: +SKIP
    >>> acro = ACRO(suppress=True)                                 # doctest: +SKIP
    >>> df = acro.read("persons")                                  # the delivered dataset  # doctest: +SKIP
    >>> acro.crosstab(df.sex, df.age_band)                         # doctest: +SKIP
    >>> acro.pivot_table(df, values="ddd", index="sex", aggfunc="mean")  # doctest: +SKIP
    >>> acro.add_exception("output_1", "the count of 4 is published")   # doctest: +SKIP
    >>> acro.finalise("scratch/outputs")                           # doctest: +SKIP

    Tables are built from the rows with the persons behind every cell (distinct pseudonyms), checked with the
    permit's disclosure profile (``$TOISIO_DISCLOSURE_PROFILE``, else the service default), and, with
    ``suppress=True``, suppressed (primary and secondary) and rounded.  A table made from a dataset read with
    :meth:`read` (its columns as read, on all its rows) carries its specification: the airlock runs it again on
    the delivered data and marks the file *verified*.  ``finalise`` writes each output, its specification and one
    machine-readable ``results.json`` (SATRE 3.3.09).
    """

    def __init__(self, config: str = "default", suppress: bool = False, *, profile_name: str | None = None):
        import json
        import os

        from secure_env.airlock.profiles import DisclosureProfile

        self.suppress = suppress
        given = os.environ.get("TOISIO_DISCLOSURE_PROFILE", "")
        if profile_name:
            self.profile = profile(profile_name)
        elif given.startswith("{"):
            self.profile = DisclosureProfile.model_validate(json.loads(given))
        else:
            self.profile = profile(given or "toisio-default")
        self.results: dict[str, dict] = {}
        self._frames: dict[int, tuple[pd.DataFrame, dict]] = {}

    # ---- data
    def read(self, dataset: str, where: dict | None = None) -> pd.DataFrame:
        """A delivered dataset (``$TOISIO_DATA/<dataset>``), optionally only the rows where columns equal values."""
        import os

        data = Path(os.environ.get("TOISIO_DATA", "."))
        df = pd.read_parquet(data / dataset)
        for col, value in (where or {}).items():
            df = df[df[col].astype("string") == str(value)]
        df = df.reset_index(drop=True)
        source = {"dataset": dataset, "where": dict(where or {}), "token": len(self._frames) + 1}
        df.attrs["toisio"] = source
        self._frames[source["token"]] = (df, source)
        return df

    def _source(self, parts: list[pd.Series]) -> tuple[pd.DataFrame | None, dict | None]:
        """The frame read with :meth:`read` that every series comes from unchanged, on all its rows, or None."""
        tokens = {(s.attrs.get("toisio") or {}).get("token") for s in parts}
        if len(tokens) != 1 or None in tokens:
            return None, None
        frame, source = self._frames[tokens.pop()]
        for s in parts:
            if s.name not in frame.columns or not s.index.equals(frame.index) or \
                    not s.astype("string").fillna("\0").equals(frame[s.name].astype("string").fillna("\0")):
                return None, None
        return frame, source

    # ---- tables
    def crosstab(self, index, columns=None, values=None, rownames=None, colnames=None, aggfunc=None,
                 margins: bool = False, margins_name: str = "All", dropna: bool = True, normalize=False,
                 show_suppressed: bool = False) -> pd.DataFrame:
        """pandas' and ACRO's crosstab: counts (or ``aggfunc`` of ``values``) by one or more row and column
        series."""
        rows = list(index) if isinstance(index, list | tuple) else [index]
        cols = [] if columns is None else (list(columns) if isinstance(columns, list | tuple) else [columns])
        vals = [values] if values is not None else []
        return self._table("crosstab", rows, cols, vals, aggfunc or "count", margins, normalize)

    def pivot_table(self, data: pd.DataFrame, values=None, index=None, columns=None, aggfunc="mean",
                    margins: bool = False, margins_name: str = "All") -> pd.DataFrame:
        """pandas' and ACRO's pivot_table on a frame."""
        names = lambda x: [] if x is None else ([x] if isinstance(x, str) else list(x))  # noqa: E731
        if isinstance(aggfunc, list | tuple):
            raise ValueError("one aggfunc per table: make one table per statistic")
        return self._table("pivot_table", [data[c] for c in names(index)], [data[c] for c in names(columns)],
                           [data[values]] if values else [], aggfunc, margins, False)

    def _table(self, command: str, rows: list, cols: list, vals: list, aggfunc: str, margins: bool,
               normalize, *, bins: dict | None = None, source_series: list | None = None) -> pd.DataFrame:
        from secure_env.airlock import tables as T

        aggfunc = {"size": "count", "nunique": "count", "std": "std"}.get(str(aggfunc), str(aggfunc))
        frame, source = self._source(source_series or [*rows, *cols, *vals])
        spec = None
        if frame is not None and "pseudonym" in frame.columns:
            spec = T.TableSpec(dataset=source["dataset"], where=source["where"],
                               index=tuple(s.name for s in rows), columns=tuple(s.name for s in cols),
                               values=vals[0].name if vals else None, aggfunc=aggfunc, margins=margins,
                               normalize=normalize or False, suppress=self.suppress, profile=self.profile,
                               bins=bins or {})
            if bins:
                frame = frame.assign(**{c: T.bin_of(frame[c], e) for c, e in bins.items()})
            table = T.compute(spec, frame, top_m=max(self.profile.nk_n, 2))
        else:  # not traceable to a delivered dataset: each row a contributor; the airlock cannot verify it
            work = pd.concat([*rows, *cols, *vals], axis=1)
            work["_row"] = range(len(work))
            table = build_table(work, [s.name for s in rows], [s.name for s in cols], aggfunc=aggfunc,
                                values=vals[0].name if vals else None, person="_row", margins=margins,
                                normalize=normalize, top_m=max(self.profile.nk_n, 2))
        report = check_table(table, self.profile)
        out = table.values
        if self.suppress:
            out, _, _ = suppress(table, report)
        if table.statistic == "count":
            out = round_counts(out, self.profile.rounding_base)
        name = f"output_{len(self.results)}"
        self.results[name] = {"command": command, "status": report.status, "summary": report.to_dict(),
                              "spec": None if spec is None else spec.model_dump(mode="json"), "exception": "",
                              "table": out}
        return out

    # ---- histograms and survival
    def hist(self, data: pd.DataFrame, column: str, bins=10, range=None, filename: str = "histogram.png",  # noqa: A002
             **kwargs) -> Path:
        """A histogram of ``column`` (ACRO's ``hist``): persons per bin checked like a count table, the figure
        drawn from what may be shown (suppressed bins left out) and saved to ``filename`` with its specification
        beside it (the airlock draws it again and compares); the counts are an output too.  The edges come from
        ``range`` (or explicit ``bins`` edges), never from the data's minimum and maximum, which would show
        individual values."""
        from secure_env.airlock import tables as T

        if isinstance(bins, int):
            if range is None:
                raise ValueError("hist needs range=(low, high): edges from the data's minimum and maximum would "
                                 "show individual values")
            edges = tuple(float(x) for x in np.linspace(range[0], range[1], bins + 1))
        else:
            edges = tuple(float(x) for x in bins)
        binned = data.assign(**{column: T.bin_of(data[column], edges)})
        binned.attrs = data.attrs
        self._table("hist", [binned[column]], [], [], "count", False, False, bins={column: edges},
                    source_series=[data[column]])
        result = self.results[f"output_{len(self.results) - 1}"]
        Path(filename).write_bytes(T.draw_histogram(result["table"].iloc[:, 0], column))
        if result["spec"] is not None:  # the figure's own specification: the airlock draws it again
            figure = T.FigureSpec(column=column, table=T.TableSpec.model_validate(result["spec"]))
            Path(str(filename) + T.SPEC_SUFFIX).write_text(figure.model_dump_json(indent=2) + "\n")
        result["figure"] = str(filename)
        return Path(filename)

    def surv_func(self, time: pd.Series, status: pd.Series, output: str = "table", filename: str = "kaplan-meier.png",
                  **kwargs):
        """A Kaplan-Meier survival table (ACRO's ``surv_func``): steps merged until each stands for at least the
        profile's minimum of persons leaving, none once fewer are at risk; ``output="plot"`` also draws it."""
        from secure_env.airlock import survival as S

        table = S.safe_table(S.raw_table(time, status), self.profile.min_count)
        report = S.check(table, self.profile)
        frame, source = self._source([time, status])
        spec = None
        if frame is not None:
            spec = S.SurvivalSpec(dataset=source["dataset"], where=source["where"], time=time.name, event=status.name,
                                  min_count=self.profile.min_count)
        name = f"output_{len(self.results)}"
        self.results[name] = {"command": "surv_func", "status": report.status, "summary": report.to_dict(),
                              "spec": None if spec is None else spec.model_dump(mode="json"), "exception": "",
                              "table": table}
        if output == "plot":  # drawn deterministically, with its own specification: the airlock draws it again
            from secure_env.airlock import tables as T

            Path(filename).write_bytes(S.draw_curve(table, str(time.name)))
            if spec is not None:
                figure = T.FigureSpec(kind="kaplan_meier", column=str(time.name), survival=spec)
                Path(str(filename) + T.SPEC_SUFFIX).write_text(figure.model_dump_json(indent=2) + "\n")
            self.results[name]["figure"] = str(filename)
        return table

    # ---- models
    def _model(self, kind: str, formula: str, data: pd.DataFrame, parts: list[pd.Series] | None = None):
        from secure_env.airlock import regression as R

        results = R.fit(kind, formula, data)
        frame, source = self._source(parts or [data[c] for c in R.formula_columns(formula.split("~", 1)[1]) +
                                               R.formula_columns(formula.split("~", 1)[0]) if c in data.columns])
        spec = None
        if frame is not None and len(data) == len(frame):
            spec = R.ModelSpec(dataset=source["dataset"], where=source["where"], kind=kind, formula=formula)
        report = R.check_model(results, self.profile)
        name = f"output_{len(self.results)}"
        self.results[name] = {"command": f"{kind}r", "status": report.status, "summary": report.to_dict(),
                              "spec": None if spec is None else spec.model_dump(mode="json"), "exception": "",
                              "table": R.summary(results)}
        return results

    def olsr(self, formula: str, data: pd.DataFrame, subset=None, drop_cols=None, *args, **kwargs):
        """Ordinary least squares from a formula (ACRO's ``olsr``); checked for residual degrees of freedom and
        the records behind each categorical level."""
        return self._model("ols", formula, data if subset is None else data[subset])

    def logitr(self, formula: str, data: pd.DataFrame, subset=None, drop_cols=None, *args, **kwargs):
        return self._model("logit", formula, data if subset is None else data[subset])

    def probitr(self, formula: str, data: pd.DataFrame, subset=None, drop_cols=None, *args, **kwargs):
        return self._model("probit", formula, data if subset is None else data[subset])

    def ols(self, endog: pd.Series, exog: pd.DataFrame, missing: str = "none", hasconst=None, **kwargs):
        """Ordinary least squares from arrays (ACRO's ``ols``): ``endog`` a column and ``exog`` columns of a frame
        read with :meth:`read` (a ``const`` column of ones, as ``statsmodels.api.add_constant`` adds, is the
        intercept; without it the model has none, as statsmodels' ``OLS``).  Fitted as the equivalent formula, so
        that it carries a specification the airlock fits again."""
        return self._model(*self._arrays("ols", endog, exog))

    def logit(self, endog: pd.Series, exog: pd.DataFrame, missing: str = "none", **kwargs):
        """Logistic regression from arrays (ACRO's ``logit``); see :meth:`ols`."""
        return self._model(*self._arrays("logit", endog, exog))

    def probit(self, endog: pd.Series, exog: pd.DataFrame, missing: str = "none", **kwargs):
        """Probit regression from arrays (ACRO's ``probit``); see :meth:`ols`."""
        return self._model(*self._arrays("probit", endog, exog))

    @staticmethod
    def _arrays(kind: str, endog, exog) -> tuple[str, str, pd.DataFrame, list[pd.Series]]:
        """The formula, data and source columns equivalent to ``kind(endog, exog)``."""
        from secure_env.airlock import regression as R

        x = exog.to_frame() if isinstance(exog, pd.Series) else exog
        if not isinstance(endog, pd.Series) or not isinstance(x, pd.DataFrame) or endog.name is None:
            raise ValueError(f"{kind}(endog, exog) takes a named column and a frame of named columns (as read with "
                             f"ACRO.read); for other data use a formula ({kind}r)")
        const = [c for c in x.columns if str(c) == "const" and bool((pd.to_numeric(x[c], errors="coerce") == 1)
                                                                     .all())]
        terms = [str(c) for c in x.columns if c not in const]
        odd = [str(n) for n in (endog.name, *terms) if not re.fullmatch(R.NAME, str(n)) or str(n) == "C"]
        if odd:
            raise ValueError(f"{kind}(endog, exog): the column names must be plain names (letters, digits, _ and "
                             f"., not starting with a digit) to be fitted again by the airlock; rename {odd}")
        formula = f"{endog.name} ~ {' + '.join(terms) if terms else '1'}" + ("" if const else " - 1")
        data = pd.concat([endog, x.drop(columns=const)], axis=1)
        parts = [endog]
        for c in terms:
            column = x[c].copy()
            if not column.attrs.get("toisio"):  # add_constant builds a new frame, without pandas' attrs: the
                column.attrs = dict(endog.attrs)  # values are then compared with endog's frame (:meth:`_source`)
            parts.append(column)
        return kind, formula, data, parts

    def add_exception(self, output: str, reason: str) -> None:
        """Ask for an exception for an output whose check failed (the reviewers see the reason)."""
        if output not in self.results:
            raise KeyError(f"no output {output!r}; outputs: {', '.join(self.results)}")
        if not reason.strip():
            raise ValueError("an exception needs a reason")
        self.results[output]["exception"] = reason.strip()

    def remove_output(self, output: str) -> None:
        self.results.pop(output)

    def finalise(self, path: str | Path = "outputs", ext: str = "csv") -> Path:
        """Write every output (``<name>.csv``, and its ``.spec.json`` when it has one) and ``results.json``."""
        import json

        from secure_env.airlock import tables as T

        if ext != "csv":
            raise ValueError("outputs are written as csv")
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        listing = []
        for name, r in self.results.items():
            target = out / f"{name}.csv"
            if r["spec"] is not None and r["spec"].get("format") == "toisio-model-spec/1":
                from secure_env.airlock import regression as R

                R.write(target, r["table"], R.ModelSpec.model_validate(r["spec"]))
            elif r["command"] == "surv_func":
                from secure_env.airlock import survival as S

                S.write(target, r["table"], None if r["spec"] is None else S.SurvivalSpec.model_validate(r["spec"]))
            elif r["spec"] is not None:
                T.write(target, r["table"], T.TableSpec.model_validate(r["spec"]))
            else:
                r["table"].to_csv(target)
            listing.append({"output": name, "file": target.name, "figure": r.get("figure"), "command": r["command"],
                            "status": r["status"],
                            "exception": r["exception"], "specification": r["spec"],
                            "checks": r["summary"], "verifiable": r["spec"] is not None})
        (out / "results.json").write_text(json.dumps({"format": "toisio-results/1", "profile": self.profile.name,
                                                      "outputs": listing}, indent=2, default=str) + "\n")
        return out
