"""send rates: pacing state of each mail transport, shared by the workers

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('send_rates',
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('state', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_send_rates'))
    )


def downgrade() -> None:
    op.drop_table('send_rates')
