"""Fees: the published schedule as versioned configuration (``permits/fees.yaml``), computed at decision.

The fee is the application fee for the kind and category in force on the decision date, plus the
authority's hourly work, plus the controllers' extraction estimates passed through.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class Fee:
    """A computed fee with its parts."""

    schedule_version: str
    application_fee: Decimal
    hourly_work: Decimal
    controller_costs: Decimal
    total: Decimal
    currency: str


@cache
def schedule() -> tuple[dict, ...]:
    """All schedule versions, oldest first."""
    text = resources.files("permits").joinpath("fees.yaml").read_text("utf-8")
    versions = yaml.safe_load(text)["versions"]
    return tuple(sorted(versions, key=lambda v: v["effective_from"]))


def version_on(day: date) -> dict:
    """The schedule version in force on ``day``."""
    current = None
    for v in schedule():
        if v["effective_from"] <= day:
            current = v
    if current is None:
        raise ValueError(f"no fee schedule is in force on {day}")
    return current


def compute_fee(kind: str, category: str, decided_on: date, *, work_hours: float = 0.0,
                controller_costs: Decimal = Decimal(0)) -> Fee:
    """The fee for an application decided on ``decided_on``."""
    v = version_on(decided_on)
    try:
        base = Decimal(str(v["application"][kind][category]))
    except KeyError:
        raise ValueError(f"no fee for kind {kind!r} and category {category!r}") from None
    hourly = (Decimal(str(v["hourly_work"])) * Decimal(str(work_hours))).quantize(Decimal("0.01"))
    total = base + hourly + Decimal(controller_costs)
    return Fee(f"{v['effective_from']} ({v['source']})", base, hourly, Decimal(controller_costs), total,
               v["currency"])
