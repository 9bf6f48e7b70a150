"""newsletter product: filters, breaking lane, first fill, edition lifecycle, subscriber events, throttles

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.alter_column('cron', existing_type=sa.String(length=100), nullable=True)
        batch_op.add_column(sa.Column('categories_include', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('categories_exclude', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('breaking_categories', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('first_fill', sa.String(length=20), nullable=False, server_default='none'))

    with op.batch_alter_table('editions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=20), nullable=False, server_default='regular'))
        batch_op.add_column(sa.Column('custom_subject', sa.String(length=998), nullable=True))
        batch_op.add_column(sa.Column('warnings', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_editions_scheduled_for'), ['scheduled_for'], unique=False)

    op.create_table('subscriber_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('newsletter_id', sa.Integer(), nullable=True),
    sa.Column('delivery_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('source', sa.String(length=30), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('source_id', sa.String(length=300), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_subscriber_events_delivery_id_deliveries'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['newsletter_id'], ['newsletters.id'], name=op.f('fk_subscriber_events_newsletter_id_newsletters'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], name=op.f('fk_subscriber_events_subscriber_id_subscribers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriber_events')),
    sa.UniqueConstraint('source_id', name=op.f('uq_subscriber_events_source_id'))
    )
    with op.batch_alter_table('subscriber_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscriber_events_delivery_id'), ['delivery_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_subscriber_events_subscriber_id'), ['subscriber_id'], unique=False)

    op.create_table('throttles',
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_throttles'))
    )


def downgrade() -> None:
    op.drop_table('throttles')
    with op.batch_alter_table('subscriber_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subscriber_events_subscriber_id'))
        batch_op.drop_index(batch_op.f('ix_subscriber_events_delivery_id'))
    op.drop_table('subscriber_events')
    with op.batch_alter_table('editions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_editions_scheduled_for'))
        batch_op.drop_column('started_at')
        batch_op.drop_column('warnings')
        batch_op.drop_column('custom_subject')
        batch_op.drop_column('kind')
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.drop_column('first_fill')
        batch_op.drop_column('breaking_categories')
        batch_op.drop_column('categories_exclude')
        batch_op.drop_column('categories_include')
        batch_op.alter_column('cron', existing_type=sa.String(length=100), nullable=False)
