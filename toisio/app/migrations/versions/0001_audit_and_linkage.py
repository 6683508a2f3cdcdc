"""Audit log (append-only) and linkage runs.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from toisio.audit import APPEND_ONLY_POSTGRES, APPEND_ONLY_SQLITE

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ts", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_event")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_audit_event_prev_hash")),
    )
    op.create_index(op.f("ix_audit_event_action"), "audit_event", ["action"])
    op.create_index(op.f("ix_audit_event_subject"), "audit_event", ["subject"])
    statements = APPEND_ONLY_POSTGRES if op.get_bind().dialect.name == "postgresql" else APPEND_ONLY_SQLITE
    for statement in statements:
        op.execute(statement)

    op.create_table(
        "linkage_run",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("permit_id", sa.String(length=64), nullable=False),
        sa.Column("scope_sha256", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.String(length=32), nullable=False),
        sa.Column("finished_at", sa.String(length=32), nullable=True),
        sa.Column("output_dir", sa.Text(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_linkage_run")),
    )
    op.create_index(op.f("ix_linkage_run_permit_id"), "linkage_run", ["permit_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_linkage_run_permit_id"), table_name="linkage_run")
    op.drop_table("linkage_run")
    op.drop_index(op.f("ix_audit_event_subject"), table_name="audit_event")
    op.drop_index(op.f("ix_audit_event_action"), table_name="audit_event")
    op.drop_table("audit_event")
