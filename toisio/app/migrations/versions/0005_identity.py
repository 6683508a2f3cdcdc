"""identity: local accounts (argon2 + TOTP), OpenID Connect identities, expiring API tokens

The old never-expiring token column of ``app_user`` is dropped: its tokens stop working and their
users sign in again (``toisio login``).  ``toisio db upgrade`` then records each existing user's
state in the audit chain (``user.baseline_recorded``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('user_credential',
    sa.Column('user_id', sa.String(length=100), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('totp_secret', sa.Text(), nullable=False),
    sa.Column('totp_last_step', sa.Integer(), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.String(length=32), nullable=True),
    sa.Column('password_set_at', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.user_id'], name=op.f('fk_user_credential_user_id_app_user')),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_user_credential'))
    )
    op.create_table('user_oidc_identity',
    sa.Column('issuer', sa.String(length=300), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('user_id', sa.String(length=100), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.user_id'],
                            name=op.f('fk_user_oidc_identity_user_id_app_user')),
    sa.PrimaryKeyConstraint('issuer', 'subject', name=op.f('pk_user_oidc_identity'))
    )
    with op.batch_alter_table('user_oidc_identity', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_oidc_identity_user_id'), ['user_id'], unique=False)
    op.create_table('api_token',
    sa.Column('token_id', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.String(length=32), nullable=False),
    sa.Column('expires_at', sa.String(length=32), nullable=False),
    sa.Column('last_used_at', sa.String(length=32), nullable=True),
    sa.Column('revoked_at', sa.String(length=32), nullable=True),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('mfa', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.user_id'], name=op.f('fk_api_token_user_id_app_user')),
    sa.PrimaryKeyConstraint('token_id', name=op.f('pk_api_token')),
    sa.UniqueConstraint('sha256', name=op.f('uq_api_token_sha256'))
    )
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_token_user_id'), ['user_id'], unique=False)
    with op.batch_alter_table('app_user', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_app_user_token_sha256'), type_='unique')
        batch_op.drop_column('token_sha256')


def downgrade() -> None:
    with op.batch_alter_table('app_user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_sha256', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_app_user_token_sha256'), ['token_sha256'])
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_token_user_id'))
    op.drop_table('api_token')
    with op.batch_alter_table('user_oidc_identity', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_oidc_identity_user_id'))
    op.drop_table('user_oidc_identity')
    op.drop_table('user_credential')
