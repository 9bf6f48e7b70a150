"""clicks counted per story of an edition, never per reader: a newsletter opts in, and each edition's story
links go through a counting redirect; one counter row per (edition, link), with no reader in it

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-09
"""

from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('count_clicks', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        'edition_links',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('edition_id', sa.Integer(), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('article_id', sa.Integer(), nullable=True),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('clicks', sa.Integer(), nullable=False, server_default='0'),
        sa.ForeignKeyConstraint(['article_id'], ['articles.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['edition_id'], ['editions.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('edition_id', 'number'),
    )


def downgrade() -> None:
    op.drop_table('edition_links')
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.drop_column('count_clicks')
