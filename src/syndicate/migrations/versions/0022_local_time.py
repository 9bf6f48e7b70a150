"""delivery at each reader's local time: a reader's own time zone, and a newsletter that sends its regular
editions at the slot's wall-clock time in each reader's zone (the deliveries of readers still before it wait)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        # NULL: the newsletter's own zone, as before.
        batch_op.add_column(sa.Column('timezone', sa.String(length=64), nullable=True))
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('local_time', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.drop_column('local_time')
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.drop_column('timezone')
