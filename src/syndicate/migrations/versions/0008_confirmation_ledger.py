"""confirmation mails get a ledger: how many of a subscriber's confirmation mails went out, and when
the last was handed to a worker, so a mail whose task was lost is sent again by the tick (which
finds the few pending subscribers by an index on their status)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('confirmations_mailed', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('confirmation_queued_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_subscribers_status'), ['status'], unique=False)
    # What was asked for before this ledger is taken as sent: nobody gets an old confirmation again.
    op.execute("UPDATE subscribers SET confirmations_mailed = confirmations_sent, "
               "confirmation_queued_at = confirmation_sent_at")


def downgrade() -> None:
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subscribers_status'))
        batch_op.drop_column('confirmation_queued_at')
        batch_op.drop_column('confirmations_mailed')
