"""Cohort helpers on small hand-made frames."""

import pytest

from pseudonymise.cohort import one_row_per_person

pytestmark = pytest.mark.slow


def test_one_row_per_person_is_the_same_whatever_the_input_order(spark):
    rows = [("010190-123L", 2, "091"), ("010190-123L", 1, "049"), ("020290-234M", 1, None)]
    schema = "hetu string, sex int, municipality string"
    picked = [
        sorted(tuple(r) for r in one_row_per_person(spark.createDataFrame(order, schema).repartition(3)).collect())
        for order in (rows, rows[::-1], [rows[1], rows[2], rows[0]])
    ]
    assert picked[0] == picked[1] == picked[2]
    assert picked[0] == [("010190-123L", 1, "049"), ("020290-234M", 1, None)]


def test_one_row_per_person_with_only_the_key(spark):
    df = spark.createDataFrame([("a",), ("a",), ("b",)], "hetu string")
    assert sorted(r["hetu"] for r in one_row_per_person(df).collect()) == ["a", "b"]
