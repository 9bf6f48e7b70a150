"""the pre-send gate: what each edition's checks found and which an editor overrode (who, why); the links
checked, remembered for a while per URL; each newsletter's oldest story, and how many an edition left out

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_age_hours', sa.Integer(), nullable=False, server_default='72'))
    with op.batch_alter_table('editions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('checks', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('overrides', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('left_out_for_age', sa.Integer(), nullable=False, server_default='0'))
    op.create_table(
        'link_checks',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('status', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )


def downgrade() -> None:
    op.drop_table('link_checks')
    with op.batch_alter_table('editions', schema=None) as batch_op:
        batch_op.drop_column('left_out_for_age')
        batch_op.drop_column('overrides')
        batch_op.drop_column('checks')
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.drop_column('max_age_hours')
