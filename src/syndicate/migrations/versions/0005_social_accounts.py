"""social: account settings and credentials, post lanes, schedules and re-shares, the kill switch

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('switches',
    sa.Column('name', sa.String(length=50), nullable=False),
    sa.Column('engaged', sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_switches'))
    )
    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('share', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('lane', sa.String(length=20), nullable=False, server_default='regular'))
        batch_op.add_column(sa.Column('payload', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('edited', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('planned_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('uncertain', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.drop_constraint(batch_op.f('uq_posts_article_id'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_posts_article_id'), ['article_id', 'account_id', 'share'])

    with op.batch_alter_table('social_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('paused_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('settings', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('credentials', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('session', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('parked_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_dispatched_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('social_accounts', schema=None) as batch_op:
        batch_op.drop_column('last_dispatched_at')
        batch_op.drop_column('parked_until')
        batch_op.drop_column('session')
        batch_op.drop_column('credentials')
        batch_op.drop_column('settings')
        batch_op.drop_column('paused_reason')

    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_posts_article_id'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_posts_article_id'), ['article_id', 'account_id'])
        batch_op.drop_column('uncertain')
        batch_op.drop_column('planned_at')
        batch_op.drop_column('scheduled_at')
        batch_op.drop_column('edited')
        batch_op.drop_column('payload')
        batch_op.drop_column('lane')
        batch_op.drop_column('share')

    op.drop_table('switches')
