"""dp receipts: each query the service's DP query service answers keeps the receipt it signed, so that the
airlock verifies a DP output against the ledger

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dp_spend', schema=None) as batch_op:
        batch_op.add_column(sa.Column('receipt', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('dp_spend', schema=None) as batch_op:
        batch_op.drop_column('receipt')
