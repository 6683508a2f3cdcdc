"""Plain factory functions for test objects."""

from __future__ import annotations

from pathlib import Path

from permits.scope import PermitScope
from toisio.config import load_settings
from toisio.service import Service


def make_service(home: Path, **overrides) -> Service:
    """A service with its own home (database, keys, quarantine) under ``home``."""
    return Service(load_settings(home=home, spark_master="local[2]", spark_shuffle_partitions=2, **overrides))


def make_scope(**overrides) -> PermitScope:
    """A diabetes cohort scope; override any top-level field."""
    raw = {
        "permit_id": "TOISIO-2026-1",
        "delivery": "pseudonymised",
        "cohort": {
            "registry": "hilmo", "code_columns": ["main_dg", "secondary_dg"], "code_prefixes": ["E11"],
            "period": {"start": "2005-01-01", "end": "2020-12-31"}, "controls_per_case": 2,
        },
        "registries": {
            "population": {"variables": ["sex", "birth_date", "municipality", "death_date"]},
            "hilmo": {"variables": ["admission_date", "main_dg", "secondary_dg"],
                      "period": {"start": "2005-01-01", "end": "2023-12-31"}},
            "kela_purchases": {"variables": ["purchase_date", "atc", "ddd"],
                               "period": {"start": "2005-01-01", "end": "2023-12-31"}},
        },
        "generalise": {"dates": "month", "age_bands": [0, 40, 60, 80], "municipality": "wellbeing_county"},
    }
    raw.update(overrides)
    return PermitScope.model_validate(raw)
