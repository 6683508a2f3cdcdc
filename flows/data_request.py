"""Data requests: the service itself computes the applicant's tables; nobody on their side sees rows.

For a data request the extraction is delivered to the service's own area
(:func:`aggregate_dir`), never to a workspace.  :func:`produce_statistics` computes every table
of the applicant's tabulation plan from that minimised dataset with the same disclosure checks and
suppression an analyst's tables get, and puts them into an output request made by the service
(the handler acting for it).  The request then goes through the same two independent reviews
before anything is released.  Each table is written with its specification
(:class:`secure_env.airlock.tables.TableSpec`), so the airlock runs it again and marks it verified; a rate per
population is checked here on the counts behind its numerators and reviewed by hand.  A table asked for with
``privacy: differential_privacy`` is a count by the same DP query service a workspace uses
(:mod:`secure_env.airlock.dp_service`), charged to the permit's privacy budget and written as its signed answer.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from permits.application import Kind
from permits.permissions import PermissionDenied, Role
from permits.service import form_of, frozen_scope, permit_access
from pseudonymise.pipeline import PERSONS
from secure_env.airlock import dp_service
from secure_env.airlock import tables as T
from secure_env.airlock.dp_service import DpQuery
from secure_env.airlock.outputs import add_file, create_request, submit
from secure_env.airlock.profiles import profile
from secure_env.workspace.areas import aggregate_dir
from toisio.authz import Table, rule
from toisio.errors import Conflict, Invalid
from toisio.identity import SYSTEM, Actor
from toisio.service import Service


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
    prof = profile(profile_name or svc.settings.disclosure_profile)
    people = _person_columns(delivery)
    files = []
    for i, tab in enumerate(form.tabulation_plan, 1):
        needed = [*tab.rows, *tab.columns, *([tab.value] if tab.value else []), *tab.where,
                  *([tab.date] if tab.date else [])]
        if tab.registry != "population":
            scope.check_variables_in_scope(tab.registry, [v for v in needed if v not in people])
        path = out_dir / f"table-{i}.csv"
        spec = T.TableSpec(dataset=PERSONS if tab.registry == "population" else tab.registry, where=tab.where,
                           index=tab.rows, columns=(*tab.columns, *([T.period_column(tab.date, tab.period)]
                                                                    if tab.period else [])),
                           values=tab.value, aggfunc="count" if tab.statistic == "rate" else tab.statistic,
                           with_persons=tab.registry != "population", period=tab.period, date=tab.date,
                           profile=prof)
        try:
            rows = T.rows_of(delivery, spec)
            table = T.compute(spec, rows, top_m=max(prof.nk_n, 2))
        except (FileNotFoundError, ValueError) as e:
            raise Invalid(f"tabulation_plan.{i - 1}: {e}", code="bad_tabulation") from e
        what = f"{tab.statistic} by {', '.join(tab.rows)}{' and ' + ', '.join(tab.columns) if tab.columns else ''}"
        what += f"{' by ' + tab.period if tab.period else ''} from {tab.registry}"
        if tab.where:
            what += " where " + ", ".join(f"{k} = {v}" for k, v in tab.where.items())
        if tab.privacy == "differential_privacy":
            files.append(_dp_table(svc, permit_id, delivery, spec, tab, out_dir / f"table-{i}.json", what))
            continue
        if tab.statistic == "rate":
            released, report = _rate(delivery, spec, table, tab.per or 1000, prof)
            released.to_csv(path)  # a rate is checked here; the airlock reviews it as unverifiable
            what = f"rate per {tab.per or 1000:,} persons: " + what
        else:
            released, report = T.release(spec, table, prof)
            T.write(path, released, spec)
        files.append((path, {"description": what, "method": "computed by the service from the minimised dataset, "
                                                           "with the disclosure checks and suppression",
                             "index": list(tab.rows), "statistic": "rate" if tab.statistic == "rate" else
                             tab.statistic, "check_report": report.to_dict()}))
    request_id = create_request(svc, actor, permit_id, service=True)
    for path, context in files:
        add_file(svc, actor, request_id, path, context)
    submit(svc, actor, request_id)
    return request_id


def _dp_table(svc: Service, permit_id: str, delivery: Path, spec: T.TableSpec, tab, path: Path,
              what: str) -> tuple[Path, dict]:
    """A count table with differential privacy: asked of the same DP query service a workspace uses, by the
    service itself (nobody on the applicant's side gets rows), charged to the permit's budget before it runs, and
    written as the signed answer, which the airlock verifies against the ledger."""
    query = DpQuery(statistic="crosstab", dataset=spec.dataset, rows=tab.rows[0],
                    columns=tab.columns[0] if tab.columns else None, where=tab.where, epsilon=tab.epsilon)
    answer = dp_service.answer(svc, SYSTEM, permit_id, query, data_dir=delivery)
    path.write_text(answer.model_dump_json(indent=1) + "\n")
    return path, {"description": f"persons counted with differential privacy (epsilon {tab.epsilon:g}): {what}",
                  "method": "computed by the service's DP query service from the minimised dataset (geometric noise, "
                            "each person counted once); charged to the permit's privacy budget",
                  "index": list(tab.rows), "statistic": "count"}


def _rate(delivery: Path, spec, numerator, per: int, prof):
    """Persons with the registry's rows per ``per`` persons of the population in the same row group; the checks
    are those of the counts behind the numerators."""
    from secure_env.airlock.disclosure import Table, check_table, suppress

    people = pd.read_parquet(delivery / PERSONS)
    missing = [v for v in spec.index if v not in people.columns]
    if missing:
        raise Invalid(f"a rate is per population by the persons' own variables; {missing[0]!r} is not one "
                      f"(persons have: {', '.join(map(str, people.columns))})", code="bad_tabulation")
    denominator = T.compute(spec.model_copy(update={"dataset": PERSONS, "columns": (), "where": {},
                                                    "with_persons": False, "period": None, "date": None}),
                            people).counts.iloc[:, 0]
    values = numerator.counts.div(denominator.reindex(numerator.counts.index), axis=0) * per
    table = Table(values, numerator.counts, "percent")
    report = check_table(table, prof)
    released, _, _ = suppress(table, report)
    return released, report


def _person_columns(delivery: Path) -> set[str]:
    p = delivery / PERSONS
    return set(pd.read_parquet(p).columns) if p.exists() else set()
