"""The permit's cohort: cases from a registry and matched controls from the population.

Cases are persons with a code starting with one of the scope's prefixes (in any
part of a combination code) in the cohort registry's code columns, with the
event date inside the cohort period; a case's index date is its first such
event.  Controls come from the population: persons who are not cases, in the
same stratum (birth year and/or sex), alive at their case's index date (a candidate who
died before the cohort period never enters the draw).  Assignment is deterministic and
unpredictable without the key: within a stratum, cases and candidates are each
ordered by pseudonym, and candidate *j* becomes a control of case
``ceil(j / controls_per_case)``.  A control gets its case's index date.
Cases for whom the stratum has too few candidates are counted in the manifest.

Inside the pipeline a person is keyed by the normalised identity code (``hetu``); the pseudonym
is computed only for the persons who can enter the cohort (cases and population), since it
orders the draw and names the match sets.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from catalogue.registries import load_schema
from permits.scope import Cohort


@dataclass(frozen=True)
class CohortResult:
    """Cohort members: ``hetu, pseudonym, cohort_role, match_set, index_date``."""

    members: DataFrame


def _prefix_regex(prefixes: tuple[str, ...]) -> str:
    return r"(^|[*+#&])(" + "|".join(prefixes) + ")"


def select_cases(events: DataFrame, cohort: Cohort) -> DataFrame:
    """Cases (``hetu``) with their index date, from the cohort registry's valid rows."""
    schema = load_schema(cohort.registry)
    date_col = F.col(schema.event_date)
    hit = None
    for col in cohort.code_columns:
        cond = F.coalesce(F.col(col).rlike(_prefix_regex(cohort.code_prefixes)), F.lit(False))
        hit = cond if hit is None else (hit | cond)
    in_period = (date_col >= F.lit(cohort.period.start)) & (date_col <= F.lit(cohort.period.end))
    return (
        events.where(hit & in_period)
        .groupBy("hetu")
        .agg(F.min(date_col).alias("index_date"))
    )


def one_row_per_person(df: DataFrame, key: str = "hetu") -> DataFrame:
    """One row per ``key``: the smallest row by its other columns when a person has several.

    A population extract may hold two different rows for one person (counted as
    ``excluded_duplicate_person``); taking the smallest, not whichever Spark meets first, keeps a
    re-run byte-identical.
    """
    others = [c for c in df.columns if c != key]
    if not others:
        return df.select(key).distinct()
    return df.groupBy(key).agg(F.min(F.struct(*others)).alias("_row")).select(key, "_row.*")


def _strata_cols(cohort: Cohort) -> list[str]:
    return ["_birth_year" if m == "birth_year" else "_sex" for m in cohort.match_on]


def match_controls(cases: DataFrame, population: DataFrame | None, cohort: Cohort) -> DataFrame:
    """Cases plus matched controls: ``hetu, pseudonym, cohort_role, match_set, index_date``.

    ``cases`` has ``hetu, pseudonym, index_date``; ``population`` has ``hetu, pseudonym`` and the
    population variables.
    """
    case_only = cases.select(
        "hetu", "pseudonym", F.lit("case").alias("cohort_role"), F.col("pseudonym").alias("match_set"),
        "index_date",
    )
    n = cohort.controls_per_case
    if n == 0 or population is None:
        return case_only
    death = F.col("death_date") if "death_date" in population.columns else F.lit(None).cast("date")
    pop = one_row_per_person(population.select(
        "hetu", "pseudonym", F.year("birth_date").alias("_birth_year"), F.col("sex").alias("_sex"),
        death.alias("_death"),
    ))
    strata = _strata_cols(cohort)
    case_rows = cases.join(pop.drop("pseudonym"), "hetu", "left")
    ranked_cases = case_rows.where(F.col(strata[0]).isNotNull()).withColumn(
        "_rank", F.row_number().over(Window.partitionBy(*strata).orderBy("pseudonym"))
    )
    candidates = pop.join(cases.select("hetu"), "hetu", "left_anti").where(
        F.col("_death").isNull() | (F.col("_death") >= F.lit(cohort.period.start))
    ).withColumn(
        "_crank", F.row_number().over(Window.partitionBy(*strata).orderBy("pseudonym"))
    ).withColumn("_rank", F.ceil(F.col("_crank") / F.lit(n)))
    controls = candidates.join(
        ranked_cases.select(*strata, "_rank", F.col("pseudonym").alias("match_set"), "index_date"),
        [*strata, "_rank"],
        "inner",
    ).where(F.col("_death").isNull() | (F.col("_death") > F.col("index_date"))
            ).select("hetu", "pseudonym", F.lit("control").alias("cohort_role"), "match_set", "index_date")
    return case_only.unionByName(controls)
