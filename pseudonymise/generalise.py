"""Generalisation rules applied before delivery: coarser dates, age bands, larger areas."""

from __future__ import annotations

from itertools import chain

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DateType

from catalogue.codes import municipality_to_county
from permits.scope import Generalisation


def coarsen_dates(df: DataFrame, rule: Generalisation) -> DataFrame:
    """Truncate every date column to the first day of its month or year."""
    if rule.dates == "day":
        return df
    unit = "month" if rule.dates == "month" else "year"
    for field in df.schema.fields:
        if isinstance(field.dataType, DateType):
            df = df.withColumn(field.name, F.trunc(F.col(field.name), unit))
    return df


def age_band(birth: Column, at: Column, edges: tuple[int, ...]) -> Column:
    """Label of the age band (``"40-49"``, ``"80+"``) of a person born ``birth`` at date ``at``."""
    age = F.floor(F.months_between(at, birth) / 12)
    expr = None
    for lo, hi in zip(edges, [*edges[1:], None], strict=True):
        label = f"{lo}+" if hi is None else f"{lo}-{hi - 1}"
        cond = age >= lo if hi is None else (age >= lo) & (age < hi)
        expr = F.when(cond, F.lit(label)) if expr is None else expr.when(cond, F.lit(label))
    return expr


def municipality_to_wellbeing_county(df: DataFrame, column: str = "municipality") -> DataFrame:
    """Replace a municipality code column with ``wellbeing_county``."""
    mapping = municipality_to_county()
    m = F.create_map(*[F.lit(x) for x in chain.from_iterable(sorted(mapping.items()))])
    pos = df.columns.index(column)
    cols = [F.col(c) for c in df.columns]
    cols[pos] = F.element_at(m, F.col(column)).alias("wellbeing_county")
    return df.select(*cols)
