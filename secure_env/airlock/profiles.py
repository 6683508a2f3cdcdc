"""Disclosure control profiles: the parameters of every automatic check, as configuration."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field


class DisclosureProfile(BaseModel):
    """Parameters of the automatic disclosure checks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    min_count: int = Field(ge=1, description="smallest count a cell (or the count behind a statistic) may show")
    rounding_base: int | None = Field(default=None, ge=2, description="round released counts to this base")
    nk_n: int = Field(ge=1, description="N of the N-K dominance rule")
    nk_k: float = Field(gt=0, le=1, description="K of the N-K rule: the top N may not exceed K of the total")
    p_percent: float = Field(gt=0, lt=100, description="p% rule: the rest must exceed p% of the largest")
    min_residual_df: int = Field(ge=1, description="smallest residual degrees of freedom of a model")
    zeros_disclosive: bool = Field(description="whether a zero cell fails (true) or goes to review (false)")
    individual_values: bool = Field(default=False, description="whether a min, max or mode (one person's value) "
                                                               "may pass when the cell's count reaches min_count")


@cache
def profiles() -> dict[str, DisclosureProfile]:
    """Every named profile from ``secure_env/airlock/disclosure_profiles.yaml``."""
    raw = yaml.safe_load(resources.files("secure_env.airlock").joinpath("disclosure_profiles.yaml")
                         .read_text("utf-8"))
    return {name: DisclosureProfile(name=name, **body) for name, body in raw["profiles"].items()}


def profile(name: str) -> DisclosureProfile:
    """A named profile (raises ``KeyError`` naming the known ones)."""
    known = profiles()
    if name not in known:
        raise KeyError(f"unknown disclosure profile {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def profile_for_permit(home, permit_id: str, default: str) -> DisclosureProfile:
    """The profile for one permit: ``$TOISIO_HOME/disclosure.yaml`` may define the authority's own profiles
    (``profiles:``) and assign one to a permit (``permits: {TOISIO-2026-1: acro}``); otherwise ``default``.
    """
    from pathlib import Path

    path = Path(home) / "disclosure.yaml"
    local: dict = yaml.safe_load(path.read_text("utf-8")) if path.exists() else {}
    local = local or {}
    extra = {name: DisclosureProfile(name=name, **body) for name, body in (local.get("profiles") or {}).items()}
    name = (local.get("permits") or {}).get(permit_id, default)
    if name in extra:
        return extra[name]
    return profile(name)
