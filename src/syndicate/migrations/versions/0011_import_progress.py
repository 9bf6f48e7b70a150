"""subscriber imports say when they last moved on: an import whose task was lost (queued or running, and
not moved on for a while) is handed out again by the tick, and goes on from where it stopped

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscriber_imports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('progressed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('subscriber_imports', schema=None) as batch_op:
        batch_op.drop_column('progressed_at')
