"""Database tables of the secure environment: the differential-privacy budget ledger."""

from __future__ import annotations

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from toisio.db import Base


class DpBudgetRow(Base):
    """The total privacy budget (epsilon, delta) granted to a permit."""

    __tablename__ = "dp_budget"

    permit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    set_by: Mapped[str] = mapped_column(String(100))
    set_at: Mapped[str] = mapped_column(String(32))


class DpSpendRow(Base):
    """One differentially private query charged to a permit's budget (written before it runs)."""

    __tablename__ = "dp_spend"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    permit_id: Mapped[str] = mapped_column(String(64), index=True)
    query: Mapped[str] = mapped_column(Text)
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(100))
    ts: Mapped[str] = mapped_column(String(32))
