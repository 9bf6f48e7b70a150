"""readers' rights: erasure (a keyed hash of each erased address, so no import adds it back, and the deliveries
kept for the editions' figures but cut from the person), the confirmation-mail ledger's kinds (the
confirmation, a welcome, the link that confirms an erasure), and a newsletter's welcome mail

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('erased_addresses',
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('erased_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('digest', name=op.f('pk_erased_addresses'))
    )
    op.create_table('erasure_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_erasure_keys'))
    )
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('welcome', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('confirmation_mails', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=20), server_default='confirm', nullable=False))
        batch_op.add_column(sa.Column('newsletter_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_confirmation_mails_newsletter_id_newsletters'), 'newsletters',
                                    ['newsletter_id'], ['id'], ondelete='CASCADE')
    # An erased reader's deliveries stay (an edition's sent and bounced counts don't change), naming nobody.
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.alter_column('subscriber_id', existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column('erased_with', sa.String(length=40), nullable=True))
        batch_op.drop_constraint('fk_deliveries_subscriber_id_subscribers', type_='foreignkey')
        batch_op.create_foreign_key(batch_op.f('fk_deliveries_subscriber_id_subscribers'), 'subscribers',
                                    ['subscriber_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    op.execute("DELETE FROM deliveries WHERE subscriber_id IS NULL")
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_constraint('fk_deliveries_subscriber_id_subscribers', type_='foreignkey')
        batch_op.create_foreign_key(batch_op.f('fk_deliveries_subscriber_id_subscribers'), 'subscribers',
                                    ['subscriber_id'], ['id'], ondelete='CASCADE')
        batch_op.alter_column('subscriber_id', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('erased_with')
    op.execute("DELETE FROM confirmation_mails WHERE kind <> 'confirm'")
    with op.batch_alter_table('confirmation_mails', schema=None) as batch_op:
        batch_op.drop_constraint('fk_confirmation_mails_newsletter_id_newsletters', type_='foreignkey')
        batch_op.drop_column('newsletter_id')
        batch_op.drop_column('kind')
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.drop_column('welcome')
    op.drop_table('erasure_keys')
    op.drop_table('erased_addresses')
