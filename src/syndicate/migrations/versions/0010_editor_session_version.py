"""editors get a session version: each desk session cookie carries it, and signing out or a new password
moves it on, so every session of that editor made before ends

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('editors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('editors', schema=None) as batch_op:
        batch_op.drop_column('session_version')
