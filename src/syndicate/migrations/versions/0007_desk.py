"""desk: editors' own API tokens and time zones, and CSV imports run by a worker with their progress

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('subscriber_imports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('editor', sa.String(length=64), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('data', sa.Text(), nullable=True),
    sa.Column('newsletter_ids', sa.JSON(), nullable=False),
    sa.Column('confirmed', sa.Boolean(), nullable=False),
    sa.Column('force', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriber_imports'))
    )
    with op.batch_alter_table('editors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('timezone', sa.String(length=64), nullable=True))
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('editor_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_api_tokens_editor_id'), ['editor_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_api_tokens_editor_id_editors'), 'editors', ['editor_id'], ['id'],
                                    ondelete='CASCADE')


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_api_tokens_editor_id_editors'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_api_tokens_editor_id'))
        batch_op.drop_column('editor_id')
    with op.batch_alter_table('editors', schema=None) as batch_op:
        batch_op.drop_column('timezone')
    op.drop_table('subscriber_imports')
