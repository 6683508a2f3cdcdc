"""Database tables of the permit service (the system of record)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from toisio.db import Base
from toisio.identity import UserRow  # noqa: F401  (the user table the cases refer to)


class CaseRow(Base):
    """An application case.  ``state`` caches the state derived from the case's events."""

    __tablename__ = "permit_case"

    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str | None] = mapped_column(String(64), nullable=True)
    applicant_id: Mapped[str] = mapped_column(ForeignKey("app_user.user_id"))
    handler_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.user_id"), nullable=True)
    parent_permit_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    form: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))
    submitted_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    complete_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    decision_due: Mapped[date | None] = mapped_column(Date, nullable=True)
    extension_months: Mapped[int] = mapped_column(Integer, default=0)
    decided_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    scope: Mapped[str | None] = mapped_column(Text, nullable=True)
    scope_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    valid_from: Mapped[date | None] = mapped_column(Date, nullable=True)
    valid_until: Mapped[date | None] = mapped_column(Date, nullable=True)
    fee: Mapped[str | None] = mapped_column(Text, nullable=True)


class CaseEventRow(Base):
    """One event of a case; the case's state is the fold of these."""

    __tablename__ = "case_event"
    __table_args__ = (UniqueConstraint("case_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("permit_case.case_id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(32))
    ts: Mapped[str] = mapped_column(String(32))
    on_date: Mapped[date] = mapped_column(Date)
    payload: Mapped[str] = mapped_column(Text)
    all_estimates_in: Mapped[bool] = mapped_column(Boolean, default=False)


class MemberRow(Base):
    """A named person on a case (a processor / analyst), with their confidentiality undertaking."""

    __tablename__ = "case_member"
    __table_args__ = (UniqueConstraint("case_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("permit_case.case_id"), index=True)
    user_id: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    undertaking_signed: Mapped[date | None] = mapped_column(Date, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class EstimateRow(Base):
    """A data controller's cost and time estimate for one registry of a case."""

    __tablename__ = "case_estimate"
    __table_args__ = (UniqueConstraint("case_id", "registry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("permit_case.case_id"), index=True)
    registry_name: Mapped[str] = mapped_column("registry", String(64))
    requested_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    cost_eur: Mapped[str | None] = mapped_column(String(32), nullable=True)
    working_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recorded_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    recorded_on: Mapped[date | None] = mapped_column(Date, nullable=True)


class CaseCounter(Base):
    """Next case number per year (case ids look like TOISIO-2026-17)."""

    __tablename__ = "case_counter"

    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)
