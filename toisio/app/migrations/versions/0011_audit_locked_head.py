"""audit_locked_head(): the append lock and the chain's head in one round trip (PostgreSQL)

Every append (a change's, or a batch of recorded reads) took the advisory append lock in one statement and read
the chain's newest entry in a second one, while holding the lock.  A VOLATILE PL/pgSQL function does both in one
call, and reads at a snapshot taken after the lock was granted, as the second statement did.  SQLite needs
nothing: its writers are serialised by BEGIN IMMEDIATE.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 09:40:00
"""
from alembic import op

from toisio.audit import LOCKED_HEAD_POSTGRES

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(LOCKED_HEAD_POSTGRES)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_locked_head()")
