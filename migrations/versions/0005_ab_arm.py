"""the live A/B test's arm on each trade

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('trade', sa.Column('arm', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('trade') as batch:
        batch.drop_column('arm')
