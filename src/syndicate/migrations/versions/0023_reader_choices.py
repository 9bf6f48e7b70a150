"""a reader's choices per newsletter (topics, frequency) and where their stories stand (a cursor); an
edition's variants (one render per distinct story set), which delivery carries which; a newsletter's
welcome digest

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'edition_variants',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('edition_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('article_ids', sa.JSON(), nullable=False),
        sa.Column('more', sa.Integer(), server_default='0', nullable=False),
        sa.Column('subject', sa.String(length=998), nullable=False),
        sa.Column('html', sa.Text(), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['edition_id'], ['editions.id'], name=op.f('fk_edition_variants_edition_id_editions'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_edition_variants')),
        sa.UniqueConstraint('edition_id', 'key', name=op.f('uq_edition_variants_edition_id')),
    )
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('topics', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('frequency', sa.String(length=10), server_default='each', nullable=False))
        batch_op.add_column(sa.Column('cursor_edition_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_subscriptions_cursor_edition_id_editions'), 'editions',
                                    ['cursor_edition_id'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('variant_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_deliveries_variant_id_edition_variants'), 'edition_variants',
                                    ['variant_id'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('welcome_digest', sa.Boolean(), server_default=sa.false(), nullable=False))
    # Every reader's stories so far stand at the last edition that reached them: nothing old is sent again.
    op.execute(
        "UPDATE subscriptions SET cursor_edition_id = (SELECT max(deliveries.edition_id) FROM deliveries "
        "JOIN editions ON editions.id = deliveries.edition_id WHERE deliveries.subscriber_id = subscriptions.subscriber_id "
        "AND editions.newsletter_id = subscriptions.newsletter_id AND deliveries.status = 'sent')")


def downgrade() -> None:
    with op.batch_alter_table('newsletters', schema=None) as batch_op:
        batch_op.drop_column('welcome_digest')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_deliveries_variant_id_edition_variants'), type_='foreignkey')
        batch_op.drop_column('variant_id')
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_subscriptions_cursor_edition_id_editions'), type_='foreignkey')
        batch_op.drop_column('cursor_edition_id')
        batch_op.drop_column('frequency')
        batch_op.drop_column('topics')
    op.drop_table('edition_variants')
