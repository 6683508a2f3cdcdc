"""Data requests: the service itself computes the applicant's tables; nobody on their side sees rows.

For a data request the extraction is delivered to the service's own area
(:func:`aggregate_dir`), never to a workspace.  :func:`produce_statistics` computes every table
of the applicant's tabulation plan from that minimised dataset with the same disclosure checks and
suppression an analyst's tables get, and puts them into an output request made by the service
(the handler acting for it).  The request then goes through the same two independent reviews
before anything is released.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from permits.application import Kind, Tabulation
from permits.permissions import PermissionDenied, Role
from permits.service import form_of, frozen_scope, permit_access
from pseudonymise.pipeline import PERSONS
from secure_env.airlock.outputs import add_file, create_request, submit
from secure_env.analyst import safe_crosstab
from secure_env.workspace.areas import aggregate_dir
from toisio.authz import Table, rule
from toisio.errors import Conflict
from toisio.identity import Actor
from toisio.service import Service


def _frame(delivery: Path, tab: Tabulation) -> pd.DataFrame:
    dataset = PERSONS if tab.registry == "population" else tab.registry
    df = pd.read_parquet(delivery / dataset)
    if tab.registry != "population" and (delivery / PERSONS).exists():
        persons = pd.read_parquet(delivery / PERSONS)
        extra = [c for c in persons.columns if c != "pseudonym" and c not in df.columns]
        df = df.merge(persons[["pseudonym", *extra]], on="pseudonym", how="left")
    return df


def _key(df: pd.DataFrame, cols: tuple[str, ...], name: str) -> pd.Series:
    if len(cols) == 1:
        return df[cols[0]].astype(str)
    return df[list(cols)].astype(str).agg(" / ".join, axis=1).rename(name)


class NotDelivered(Conflict):
    """Statistics asked for before the data request's extraction was delivered."""


STATISTICS = Table("data_request", {
    "produce": rule("produce a data request's statistics", {Role.HANDLER, Role.SYSTEM}),
}, {})


def produce_statistics(svc: Service, actor: Actor, permit_id: str, *, delivery: Path | None = None,
                       profile_name: str | None = None) -> str:
    """Compute the tabulation plan's tables, check them, and submit them for two-person review."""
    STATISTICS.check_can("produce", actor)
    form = form_of(svc, permit_id)
    if form.kind is not Kind.DATA_REQUEST:
        raise PermissionDenied(f"{permit_id} is a {form.kind.value}; statistics are produced for data requests",
                               action="produce_statistics")
    access = permit_access(svc, permit_id)
    if not access.in_force:
        raise PermissionDenied(f"data request {permit_id} is not in force ({access.reason})",
                               action="produce_statistics")
    scope = frozen_scope(svc, permit_id)
    delivery = delivery or aggregate_dir(svc, permit_id)
    if not delivery.is_dir() or not any(delivery.iterdir()):
        raise NotDelivered(f"data request {permit_id} has no delivery in the service's area yet ({delivery}); "
                           f"run its extraction first", code="not_delivered")
    out_dir = svc.settings.home / "statistics" / permit_id
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i, tab in enumerate(form.tabulation_plan, 1):
        needed = [*tab.rows, *tab.columns, *([tab.value] if tab.value else [])]
        if tab.registry != "population":
            scope.check_variables_in_scope(tab.registry, [v for v in needed if v not in _person_columns(delivery)])
        df = _frame(delivery, tab)
        df = df.assign(_rows=_key(df, tab.rows, "rows"))
        cols = None
        if tab.columns:
            df = df.assign(_cols=_key(df, tab.columns, "columns"))
            cols = "_cols"
        st = safe_crosstab(df, "_rows", cols, statistic=tab.statistic, value=tab.value,
                           profile_name=profile_name or svc.settings.disclosure_profile)
        table = st.table.rename_axis(index=" x ".join(tab.rows), columns=" x ".join(tab.columns) or None)
        path = out_dir / f"table-{i}.csv"
        table.to_csv(path)
        files.append((path, {"description": f"{tab.statistic} by {', '.join(tab.rows)}"
                                            f"{' and ' + ', '.join(tab.columns) if tab.columns else ''} "
                                            f"from {tab.registry}",
                             "method": "computed by the service from the minimised dataset (safe_crosstab)",
                             "index": " x ".join(tab.rows), "statistic": tab.statistic,
                             "check_report": st.report}))
    request_id = create_request(svc, actor, permit_id, service=True)
    for path, context in files:
        add_file(svc, actor, request_id, path, context)
    submit(svc, actor, request_id)
    return request_id


def _person_columns(delivery: Path) -> set[str]:
    p = delivery / PERSONS
    return set(pd.read_parquet(p).columns) if p.exists() else set()
