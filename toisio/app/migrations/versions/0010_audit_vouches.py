"""audit vouches and state change counters

Each audit entry that vouches for its subject's state (a payload field ending in ``_digest``) says so in a column
of its own, indexed with the subject, so that a read finds the newest such entry in one index lookup instead of
scanning the subject's entries (which grew with every recorded read).  Triggers count every change to the rows
behind a case, a user or a token (``state_change``), so that a process that keeps what it verified notices any
edit, the service's or anyone's.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 13:10:00
"""
import json

import sqlalchemy as sa
from alembic import op

from toisio.audit import APPEND_ONLY_SQLITE, vouching_field
from toisio.db import change_counter_ddl, drop_change_counter_ddl

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _backfill() -> None:
    """Mark the entries written before this migration.  The table refuses UPDATE (its append-only triggers),
    so they are lifted for this one statement per entry and put back in the same transaction."""
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    rows = bind.execute(sa.text("SELECT seq, payload FROM audit_event WHERE payload LIKE '%\\_digest\"%' ESCAPE '\\'"))
    marks = [(seq, vouching_field(json.loads(payload))) for seq, payload in rows]
    marks = [(seq, field) for seq, field in marks if field]
    if not marks:
        return
    if postgres:
        op.execute("ALTER TABLE audit_event DISABLE TRIGGER audit_event_no_update")
    else:
        op.execute("DROP TRIGGER audit_event_no_update")
    for seq, field in marks:
        bind.execute(sa.text("UPDATE audit_event SET vouches = :f WHERE seq = :s"), {"f": field, "s": seq})
    if postgres:
        op.execute("ALTER TABLE audit_event ENABLE TRIGGER audit_event_no_update")
    else:
        op.execute(next(s for s in APPEND_ONLY_SQLITE if "no_update" in s))


#: the tables whose rows make up the state a digest vouches for, and the subject each row belongs to
COUNTED = [("permit_case", "case:", "case_id"), ("case_member", "case:", "case_id"), ("case_event", "case:", "case_id"),
           ("app_user", "user:", "user_id"), ("user_oidc_identity", "user:", "user_id"),
           ("api_token", "token:", "token_id")]


def upgrade() -> None:
    # a plain ADD COLUMN (SQLite's batch mode would copy the table and lose its append-only triggers)
    op.add_column('audit_event', sa.Column('vouches', sa.String(length=64), nullable=True))
    op.create_index('ix_audit_event_vouches', 'audit_event', ['subject', 'vouches', 'seq'])
    _backfill()
    op.create_table('state_change',
                    sa.Column('subject', sa.String(length=200), nullable=False),
                    sa.Column('n', sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint('subject', name=op.f('pk_state_change')))
    dialect = op.get_bind().dialect.name
    for table, prefix, column in COUNTED:
        for statement in change_counter_ddl(dialect, table, prefix, column):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table, _prefix, _column in COUNTED:
        for statement in drop_change_counter_ddl(dialect, table):
            op.execute(statement)
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS state_change_count()")
    op.drop_table('state_change')
    op.drop_index('ix_audit_event_vouches', table_name='audit_event')
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column('audit_event', 'vouches')
    else:  # SQLite >= 3.35 drops a column in place (the triggers do not name it)
        op.execute("ALTER TABLE audit_event DROP COLUMN vouches")

