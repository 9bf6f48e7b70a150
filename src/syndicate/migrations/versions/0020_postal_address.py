"""a newsletter's own postal address, printed in the footer of its editions and its confirmation mails
(bulk-mail rules such as CAN-SPAM ask for one); empty: SYNDICATE_POSTAL_ADDRESS, the sender's default

Revision ID: 0020
Revises: 0018
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        # Existing newsletters get none of their own: they keep the global default, as before.
        batch_op.add_column(sa.Column('postal_address', sa.String(length=500), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.drop_column('postal_address')
