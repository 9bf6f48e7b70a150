"""an editor's own words in an edition (an intro, a blurb per story, a sponsor block), and the regular run a
prepared edition stands for, so rescheduling it never lets that run make a second mail

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08
"""

from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('editions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('slot', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('intro', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('sponsor_text', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('sponsor_url', sa.String(length=2048), nullable=True))
    with op.batch_alter_table('edition_articles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('blurb', sa.Text(), nullable=True))
    # A regular edition made before this stood for the run it was scheduled for.
    op.execute("UPDATE editions SET slot = scheduled_for WHERE kind = 'regular'")


def downgrade() -> None:
    with op.batch_alter_table('edition_articles', schema=None) as batch_op:
        batch_op.drop_column('blurb')
    with op.batch_alter_table('editions', schema=None) as batch_op:
        batch_op.drop_column('sponsor_url')
        batch_op.drop_column('sponsor_text')
        batch_op.drop_column('intro')
        batch_op.drop_column('slot')
