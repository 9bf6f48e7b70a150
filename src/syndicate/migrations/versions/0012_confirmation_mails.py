"""confirmation mails become ledger rows of their own, claimed by the task that sends them (two copies of
one task can no longer both send), with attempts and a next try; the subscriber's counters of mails
mailed and queued go

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'confirmation_mails',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('subscriber_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('claimed_by', sa.String(length=64), nullable=True),
        sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_reply', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('confirmation_mails', schema=None) as batch_op:
        batch_op.create_index('ix_confirmation_mails_status_next', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_confirmation_mails_subscriber_id'), ['subscriber_id'], unique=False)
    # A mail asked for and not yet sent under the old counters is a pending row now: the tick hands it out.
    op.execute("INSERT INTO confirmation_mails (subscriber_id, status, attempts, created_at, next_attempt_at) "
               "SELECT id, 'pending', 0, confirmation_sent_at, confirmation_queued_at FROM subscribers "
               "WHERE status = 'pending' AND confirmations_mailed < confirmations_sent "
               "AND confirmation_sent_at IS NOT NULL")
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.drop_column('confirmation_queued_at')
        batch_op.drop_column('confirmations_mailed')


def downgrade() -> None:
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('confirmations_mailed', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('confirmation_queued_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE subscribers SET confirmations_mailed = confirmations_sent")
    op.execute("UPDATE subscribers SET confirmations_mailed = confirmations_sent - 1, "
               "confirmation_queued_at = confirmation_sent_at WHERE id IN (SELECT subscriber_id FROM "
               "confirmation_mails WHERE status IN ('pending', 'sending', 'deferred'))")
    with op.batch_alter_table('confirmation_mails', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_confirmation_mails_subscriber_id'))
        batch_op.drop_index('ix_confirmation_mails_status_next')
    op.drop_table('confirmation_mails')
