"""API tokens get scopes: each route that takes a token asks for one, so a metrics scraper's token can't
push a story

Tokens made before this keep doing what they did, nothing more: an editor's token keeps the desk's API; any
other token could push stories, read metrics and report bounces, and keeps those three (an operator who
knows a token's one use replaces it with a narrower one; `syndicate token list` shows each token's scopes).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scopes', sa.String(length=200), server_default='', nullable=False))
    op.execute("UPDATE api_tokens SET scopes = 'desk:api' WHERE editor_id IS NOT NULL")
    op.execute("UPDATE api_tokens SET scopes = 'articles:push metrics:read events:bounces' WHERE editor_id IS NULL")


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('scopes')
