"""Tables of every statistic from the rows, their rules at the boundary, the ACRO-like helper in a kernel, and the
airlock running a helper's specification again: verified when the numbers match, unverified when not."""

import json

import numpy as np
import pandas as pd
import pytest

from secure_env.airlock import tables as T
from secure_env.airlock.disclosure import Table, build_table, check_table
from secure_env.airlock.profiles import profile


def _rows(n_by_group: dict[str, int], value=lambda i: 10.0 + i % 7) -> pd.DataFrame:
    rows = []
    for g, n in n_by_group.items():
        rows += [{"pseudonym": f"{g}{i}", "g": g, "v": value(i)} for i in range(n)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("stat", ["min", "max", "mode"])
def test_an_individual_value_fails_unless_the_profile_allows_it_and_the_count_reaches_the_minimum(stat):
    p = profile("acro")  # min_count 10
    allowing = p.model_copy(update={"individual_values": True})
    t = build_table(_rows({"a": 10, "b": 9}), ["g"], aggfunc=stat, values="v")
    assert [c.status for c in check_table(t, p).cells] == ["fail", "fail"]  # never by default
    cells = {c.row: c.status for c in check_table(t, allowing).cells}
    assert cells == {"b": "fail"}  # 10 persons pass, 9 fail


@pytest.mark.parametrize("stat", ["std", "var"])
def test_spread_needs_its_degrees_of_freedom_per_cell(stat):
    p = profile("acro").model_copy(update={"min_count": 2})  # isolate the df rule: min_residual_df 10
    t = build_table(_rows({"a": 11, "b": 10}), ["g"], aggfunc=stat, values="v")
    cells = {c.row: c.reasons for c in check_table(t, p).cells}
    assert list(cells) == ["b"] and "degrees of freedom below the minimum 10" in cells["b"][0]


@pytest.mark.parametrize("stat", ["median", "q25", "q90", "mean", "sum"])
def test_magnitudes_get_dominance_on_their_true_totals(stat):
    p = profile("acro")
    dominated = _rows({"a": 12}, value=lambda i: 1000.0 if i == 0 else 1.0)
    assert check_table(build_table(dominated, ["g"], aggfunc=stat, values="v"), p).status == "fail"
    spread = _rows({"a": 12}, value=lambda i: 10.0 + i)
    assert check_table(build_table(spread, ["g"], aggfunc=stat, values="v"), p).status == "pass"


def test_margins_are_counted_from_the_rows_not_summed():
    df = pd.DataFrame({"pseudonym": ["p1", "p1", "p2", "p3"], "g": ["a", "b", "a", "b"], "h": ["x", "x", "y", "y"]})
    t = build_table(df, ["g"], ["h"], margins=True)
    assert t.values.loc["All", "All"] == 3  # p1 is in two cells but one person
    assert t.values.loc["All", "x"] == 1 and t.values.loc["a", "All"] == 2


def test_several_row_and_column_variables():
    rng = np.random.default_rng(2)
    n = 300
    df = pd.DataFrame({"pseudonym": [f"p{i}" for i in range(n)], "sex": rng.choice(["1", "2"], n),
                       "county": rng.choice(["H", "L", "U"], n), "band": rng.choice(["0-39", "40+"], n),
                       "year": rng.choice(["2020", "2021"], n)})
    t = build_table(df, ["sex", "county"], ["band", "year"])
    assert t.values.shape == (6, 4) and t.values.to_numpy().sum() == n
    expected = pd.crosstab([df.sex, df.county], [df.band, df.year])
    assert (t.values.to_numpy() == expected.to_numpy()).all()


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A workspace kernel's view: the delivered data under $TOISIO_DATA."""
    rng = np.random.default_rng(4)
    n = 500
    data = tmp_path / "data"
    (data / "persons").mkdir(parents=True)
    persons = pd.DataFrame({"pseudonym": [f"p{i}" for i in range(n)], "sex": rng.choice(["1", "2"], n),
                            "band": rng.choice(["0-39", "40-59", "60+"], n, p=[0.5, 0.49, 0.01]),
                            "euros": rng.gamma(2, 50, n).round(2)})
    persons.to_parquet(data / "persons" / "part-0.parquet")
    monkeypatch.setenv("TOISIO_DATA", str(data))
    return data


def test_the_acro_helper_writes_outputs_their_specifications_and_one_results_file(kernel, tmp_path):
    from secure_env.analyst import ACRO

    acro = ACRO(suppress=True)
    df = acro.read("persons")
    counts = acro.crosstab(df.sex, df.band, margins=True)
    assert counts.isna().to_numpy().sum() >= 2  # the rare band suppressed, with a second cell
    acro.pivot_table(df, values="euros", index="sex", aggfunc="mean")
    adults = df[df.band != "0-39"]
    acro.crosstab(adults.sex, adults.band)  # filtered in the notebook: no specification (unverifiable)
    acro.add_exception("output_0", "the margins are published totals")
    out = acro.finalise(tmp_path / "outputs")
    results = json.loads((out / "results.json").read_text())
    assert [o["verifiable"] for o in results["outputs"]] == [True, True, False]
    assert results["outputs"][0]["exception"] == "the margins are published totals"
    assert (out / "output_0.csv.spec.json").exists() and not (out / "output_2.csv.spec.json").exists()
    with pytest.raises(KeyError, match="outputs: output_0"):
        acro.add_exception("nope", "x")


def test_the_airlock_verifies_a_helper_table_by_running_its_specification_again(kernel, tmp_path):
    from secure_env.analyst import ACRO

    acro = ACRO(suppress=False)  # nothing suppressed: what the checks flag is shown, and fails
    df = acro.read("persons")
    acro.crosstab(df.sex, df.band, margins=True)
    acro.pivot_table(df, values="euros", index="sex", columns="band", aggfunc="max")
    out = acro.finalise(tmp_path / "outputs")
    p = profile("toisio-default")
    for name in ("output_0.csv", "output_1.csv"):
        spec = T.spec_beside(out / name)
        v = T.verify(out / name, spec, kernel, p)
        assert v.verified, v.reason
    v = T.verify(out / "output_1.csv", T.spec_beside(out / "output_1.csv"), kernel, p)
    assert v.report.status == "fail"  # maxima are individual values: the true table fails
    suppressed = ACRO(suppress=True)
    df2 = suppressed.read("persons")
    suppressed.pivot_table(df2, values="euros", index="sex", columns="band", aggfunc="max")
    out2 = suppressed.finalise(tmp_path / "suppressed")
    v = T.verify(out2 / "output_0.csv", T.spec_beside(out2 / "output_0.csv"), kernel, p)
    assert v.verified and v.report.status == "pass"  # every maximum hidden: nothing individual shown
    # an edited number, a changed label, a forged filter: unverified
    text = (out / "output_0.csv").read_text()
    first_number = next(tok for tok in text.splitlines()[1].split(",")[1:] if tok)
    (out / "output_0.csv").write_text(text.replace(first_number, str(int(float(first_number)) + 1), 1))
    v = T.verify(out / "output_0.csv", T.spec_beside(out / "output_0.csv"), kernel, p)
    assert not v.verified and "when run again" in v.reason
    spec = T.spec_beside(out / "output_1.csv").model_copy(update={"where": {"sex": "1"}})
    assert not T.verify(out / "output_1.csv", spec, kernel, p).verified


def test_a_suppressed_cell_is_not_judged_by_the_count_it_hides():
    values = pd.DataFrame([[np.nan, np.nan, 30.0], [np.nan, np.nan, 31.0], [40.0, 41.0, 42.0]],
                          index=["a", "b", "c"], columns=["x", "y", "z"])
    counts = pd.DataFrame([[3.0, 20.0, 30.0], [25.0, 22.0, 31.0], [40.0, 41.0, 42.0]], index=values.index,
                          columns=values.columns)
    assert check_table(Table(values, counts, "count"), profile("toisio-default")).status == "pass"
    assert check_table(Table(counts, counts, "count"), profile("toisio-default")).status == "fail"


@pytest.mark.parametrize("formula, ok", [
    ("y ~ x + C(sex)", True), ("y ~ x * z - 1", True), ("y ~ x:z + 0", True),
    ("y ~ np.log(x)", False), ("y ~ __import__('os').system('id')", False), ("y ~ x; import os", False),
    ("y ~ I(x**2)", False), ("y", False), ("y ~ x ~ z", False)])
def test_a_model_formula_holds_column_names_c_and_operators_only(formula, ok):
    from secure_env.airlock.regression import check_formula

    if ok:
        assert check_formula(formula) == formula
    else:
        with pytest.raises(ValueError):
            check_formula(formula)


def _model_data(kernel, n=300, rare=3):
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"pseudonym": [f"m{i}" for i in range(n)], "x": rng.normal(0, 1, n),
                       "group": ["rare"] * rare + list(rng.choice(["a", "b"], n - rare))})
    df["y"] = 2.0 * df.x + (df.group == "b") * 1.5 + rng.normal(0, 1, n)
    df["event"] = (df.y > df.y.median()).astype(int)
    (kernel / "cohort").mkdir()
    df.to_parquet(kernel / "cohort" / "p.parquet")
    return df


@pytest.mark.parametrize("kind", ["olsr", "logitr", "probitr"])
def test_a_model_fails_on_a_level_with_few_records_and_is_verified_by_fitting_again(kernel, tmp_path, kind):
    from secure_env.airlock import regression as R
    from secure_env.analyst import ACRO

    _model_data(kernel)
    acro = ACRO()
    df = acro.read("cohort")
    outcome = "y" if kind == "olsr" else "event"
    getattr(acro, kind)(f"{outcome} ~ x + C(group)", data=df)
    getattr(acro, kind)(f"{outcome} ~ x", data=df)
    assert [r["status"] for r in acro.results.values()] == ["fail", "pass"]
    assert "records behind it, fewer than the minimum" in str(acro.results["output_0"]["summary"])
    out = acro.finalise(tmp_path / "models")
    p = profile("toisio-default")
    for name, status in (("output_0.csv", "fail"), ("output_1.csv", "pass")):
        spec = T.spec_beside(out / name)
        assert isinstance(spec, R.ModelSpec)
        v = R.verify(out / name, spec, kernel, p)
        assert v.verified and v.report.status == status, v.reason
    table = pd.read_csv(out / "output_1.csv", index_col=0)
    table.loc["x", "coef"] += 0.01
    table.to_csv(out / "output_1.csv")
    assert not R.verify(out / "output_1.csv", T.spec_beside(out / "output_1.csv"), kernel, p).verified


@pytest.mark.parametrize("kind", ["ols", "logit", "probit"])
def test_a_model_from_arrays_matches_statsmodels_and_is_verified_by_fitting_again(kernel, tmp_path, kind):
    """ACRO's array forms: ``acro.ols(y, add_constant(X))`` gives statsmodels' own coefficients, and carries the
    equivalent formula's specification, which the airlock fits again; arrays not from a frame as read do not."""
    import statsmodels.api as sm

    from secure_env.airlock import regression as R
    from secure_env.analyst import ACRO

    _model_data(kernel)
    acro = ACRO()
    df = acro.read("cohort")
    outcome = df.y if kind == "ols" else df.event
    results = getattr(acro, kind)(outcome, sm.add_constant(df[["x"]]))
    direct = getattr(sm, kind.capitalize() if kind != "ols" else "OLS")(outcome, sm.add_constant(df[["x"]]))
    direct = direct.fit() if kind == "ols" else direct.fit(disp=0)
    assert np.allclose(results.params.to_numpy(), direct.params.to_numpy(), rtol=1e-5)
    getattr(acro, kind)(outcome, df[["x"]])  # no constant: no intercept, as statsmodels
    getattr(acro, kind)(outcome, df[["x"]] * 2)  # computed columns: fitted and checked, not verifiable
    assert [r["spec"] is not None for r in acro.results.values()] == [True, True, False]
    assert acro.results["output_1"]["spec"]["formula"].endswith("- 1")
    out = acro.finalise(tmp_path / "arrays")
    for name in ("output_0.csv", "output_1.csv"):
        v = R.verify(out / name, T.spec_beside(out / name), kernel, profile("toisio-default"))
        assert v.verified, v.reason
    with pytest.raises(ValueError, match="plain names"):
        acro.ols(outcome, df[["x"]].rename(columns={"x": "x value"}))


def test_residual_degrees_of_freedom_at_the_boundary(kernel):
    from secure_env.airlock import regression as R

    p = profile("acro")  # min_residual_df 10
    rng = np.random.default_rng(1)
    for n, status in ((12, "pass"), (11, "fail")):  # y ~ x: 2 parameters, df = n - 2
        df = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n)})
        assert R.check_model(R.fit("ols", "y ~ x", df), p).status == status


def test_a_table_names_what_is_wrong_with_its_variables():
    df = _rows({"a": 3})
    with pytest.raises(ValueError, match="rows or the columns once"):
        build_table(df, ["g"], ["g"])
    with pytest.raises(ValueError, match="no column 'h'; columns: pseudonym, g, v"):
        build_table(df, ["h"])
    with pytest.raises(ValueError, match="aggfunc 'avg'"):
        build_table(df, ["g"], aggfunc="avg", values="v")
    with pytest.raises(ValueError, match="needs values="):
        build_table(df, ["g"], aggfunc="mean")


def test_a_histogram_needs_explicit_edges_and_its_small_bins_fail(kernel, tmp_path):
    from secure_env.analyst import ACRO

    acro = ACRO(suppress=False, profile_name="acro")  # zeros are disclosive
    df = acro.read("persons")
    with pytest.raises(ValueError, match="range=.*individual values"):
        acro.hist(df, "euros", bins=5)
    fig = acro.hist(df, "euros", bins=10, range=(0, 1000), filename=str(tmp_path / "h.png"))
    assert fig.read_bytes().startswith(b"\x89PNG")
    r = acro.results["output_0"]
    assert r["status"] == "fail"  # the top bins are empty or hold a handful of persons
    assert list(r["table"].index)[:3] == ["[0, 100)", "[100, 200)", "[200, 300)"]  # the edges' order
    assert len(r["table"]) == 10 and r["table"].iloc[-1, 0] == 0  # every bin, the empty ones too
    out = acro.finalise(tmp_path / "outputs")
    spec = T.spec_beside(out / "output_0.csv")
    assert spec.bins == {"euros": tuple(float(x) for x in range(0, 1001, 100))}
    v = T.verify(out / "output_0.csv", spec, kernel, profile("acro"))
    assert v.verified and v.report.status == "fail"


def test_a_histogram_figure_is_verified_by_drawing_it_again(kernel, tmp_path):
    """The figure itself, not only its counts: drawn again from the delivered data, byte for byte; an edited
    figure, or one whose specification says other edges, is unverified."""
    from secure_env.analyst import ACRO

    acro = ACRO()
    df = acro.read("persons")
    png = acro.hist(df, "euros", bins=5, range=(0, 500), filename=str(tmp_path / "h.png"))
    spec = T.spec_beside(png)
    assert isinstance(spec, T.FigureSpec) and spec.table.bins == {"euros": (0.0, 100.0, 200.0, 300.0, 400.0, 500.0)}
    v = T.verify_figure(png, spec, kernel, profile("toisio-default"))
    assert v.verified, v.reason
    assert v.report.status == acro.results["output_0"]["status"]  # the checks of the table behind it
    other = spec.model_copy(update={"table": spec.table.model_copy(update={"bins": {"euros": (0.0, 250.0, 500.0)}})})
    assert not T.verify_figure(png, other, kernel, profile("toisio-default")).verified
    png.write_bytes(png.read_bytes()[:-20] + b"\0" * 20)
    assert "differs" in T.verify_figure(png, spec, kernel, profile("toisio-default")).reason


def test_a_survival_table_merges_steps_until_each_stands_for_enough_persons():
    from secure_env.airlock.survival import check, raw_table, safe_table

    rng = np.random.default_rng(9)
    n = 200
    time = pd.Series(rng.integers(1, 60, n), name="months")
    event = pd.Series(rng.integers(0, 2, n), name="died")
    raw = raw_table(time, event)
    p = profile("acro")  # min_count 10
    assert check(raw, p).status == "fail"  # one step per month: a few persons each
    safe = safe_table(raw, p.min_count)
    assert check(safe, p).status == "pass" and len(safe) < len(raw)
    assert (safe["left"] >= 10).all() and (safe["at_risk"] >= 10).all()
    assert safe["survival"].is_monotonic_decreasing
    # the survival over merged steps equals the Kaplan-Meier estimate at that time
    at = safe["time"].iloc[0]
    assert safe["survival"].iloc[0] == pytest.approx(raw.loc[raw.time == at, "survival"].iloc[0], rel=0.05)


def test_the_helper_survival_table_is_verified_against_the_delivered_data(kernel, tmp_path):
    from secure_env.airlock import survival as S
    from secure_env.analyst import ACRO

    rng = np.random.default_rng(10)
    n = 300
    (kernel / "followup").mkdir()
    pd.DataFrame({"pseudonym": [f"f{i}" for i in range(n)], "months": rng.integers(1, 80, n),
                  "died": rng.integers(0, 2, n)}).to_parquet(kernel / "followup" / "p.parquet")
    acro = ACRO()
    df = acro.read("followup")
    acro.surv_func(df.months, df.died, output="plot", filename=str(tmp_path / "km.png"))
    assert (tmp_path / "km.png").exists() and acro.results["output_0"]["status"] == "pass"
    out = acro.finalise(tmp_path / "outputs")
    spec = T.spec_beside(out / "output_0.csv")
    assert isinstance(spec, S.SurvivalSpec)
    v = S.verify(out / "output_0.csv", spec, kernel, profile("toisio-default"))
    assert v.verified and v.report.status == "pass"
    table = pd.read_csv(out / "output_0.csv")
    table.loc[0, "events"] += 1
    table.to_csv(out / "output_0.csv", index=False)
    assert not S.verify(out / "output_0.csv", spec, kernel, profile("toisio-default")).verified
    # the curve itself: drawn again from the delivered data, byte for byte
    curve = T.spec_beside(tmp_path / "km.png")
    assert isinstance(curve, T.FigureSpec) and curve.kind == "kaplan_meier" and curve.survival == spec
    v = T.verify_figure(tmp_path / "km.png", curve, kernel, profile("toisio-default"))
    assert v.verified and v.report.status == "pass", v.reason
    shifted = curve.model_copy(update={"survival": spec.model_copy(update={"where": {"died": "1"}})})
    assert not T.verify_figure(tmp_path / "km.png", shifted, kernel, profile("toisio-default")).verified
