"""output airlock: file groups with context and controls, supporting files, public and private comments

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 07:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('output_group',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('request_id', sa.String(length=80), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('context', sa.Text(), nullable=False),
    sa.Column('controls', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_output_group')),
    sa.UniqueConstraint('request_id', 'name', name=op.f('uq_output_group_request_id'))
    )
    with op.batch_alter_table('output_group', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_output_group_request_id'), ['request_id'], unique=False)
    op.create_table('output_comment',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('request_id', sa.String(length=80), nullable=False),
    sa.Column('group_name', sa.String(length=100), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('author', sa.String(length=100), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('visibility', sa.String(length=16), nullable=False),
    sa.Column('ts', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_output_comment'))
    )
    with op.batch_alter_table('output_comment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_output_comment_request_id'), ['request_id'], unique=False)
    with op.batch_alter_table('output_file', schema=None) as batch_op:
        batch_op.add_column(sa.Column('group_name', sa.String(length=100), server_default='default', nullable=False))
        batch_op.add_column(sa.Column('supporting', sa.Boolean(), server_default=sa.false(), nullable=False))
    # every existing request's files are in its 'default' group
    op.execute("INSERT INTO output_group (request_id, name, context, controls, updated_at) "
               "SELECT DISTINCT request_id, 'default', '', '', '2026-12-02T07:00:00.000000Z' FROM output_file")


def downgrade() -> None:
    with op.batch_alter_table('output_file', schema=None) as batch_op:
        batch_op.drop_column('supporting')
        batch_op.drop_column('group_name')
    with op.batch_alter_table('output_comment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_output_comment_request_id'))
    op.drop_table('output_comment')
    with op.batch_alter_table('output_group', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_output_group_request_id'))
    op.drop_table('output_group')
