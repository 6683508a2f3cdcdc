"""Linkage runs: one row per extraction, written with its audit event in one transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from toisio import audit
from toisio.db import Base
from toisio.keystore import Secret


class LinkageRun(Base):
    """An extraction run of the pipeline for one permit."""

    __tablename__ = "linkage_run"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    permit_id: Mapped[str] = mapped_column(String(64), index=True)
    scope_sha256: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[str] = mapped_column(String(32))
    finished_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    output_dir: Mapped[str] = mapped_column(Text)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def start_run(conn: Connection, key: Secret, *, run_id: str, permit_id: str, scope_sha256: str, key_id: str,
              output_dir: str, actor: str) -> None:
    """Record a started run and its audit event."""
    conn.execute(LinkageRun.__table__.insert().values(
        run_id=run_id, permit_id=permit_id, scope_sha256=scope_sha256, key_id=key_id, status="running",
        started_at=_now(), output_dir=output_dir,
    ))
    audit.append(conn, key, actor=actor, action="extraction.started", subject=f"permit:{permit_id}",
                 payload={"run_id": run_id, "scope_sha256": scope_sha256, "key_id": key_id,
                          "output_dir": output_dir})


def finish_run(conn: Connection, key: Secret, *, run_id: str, actor: str, manifest_sha256: str | None,
               error: str | None, summary: dict[str, Any]) -> None:
    """Record a finished (or failed) run and its audit event."""
    status = "failed" if error else "delivered"
    conn.execute(update(LinkageRun).where(LinkageRun.run_id == run_id).values(
        status=status, finished_at=_now(), manifest_sha256=manifest_sha256, error=error,
    ))
    permit_id = conn.execute(select(LinkageRun.permit_id).where(LinkageRun.run_id == run_id)).scalar_one()
    audit.append(conn, key, actor=actor, action=f"extraction.{status}", subject=f"permit:{permit_id}",
                 payload={"run_id": run_id, "manifest_sha256": manifest_sha256, "error": error, **summary})


def runs_for(conn: Connection, permit_id: str) -> list:
    """Runs of one permit, oldest first."""
    q = select(LinkageRun.__table__).where(LinkageRun.permit_id == permit_id).order_by(LinkageRun.started_at)
    return list(conn.execute(q))


def latest_delivery(conn: Connection, permit_id: str) -> str | None:
    """The output directory of the permit's most recent delivered run, if any."""
    q = (select(LinkageRun.output_dir).where(LinkageRun.permit_id == permit_id, LinkageRun.status == "delivered")
         .order_by(LinkageRun.finished_at.desc()))
    return conn.execute(q).scalars().first()
