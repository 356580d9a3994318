"""an index on trade.opened_at: the in-flight notional every decision reads counts the trades opened since the
cached account's read, and without it PostgreSQL scanned every trade, decisions sized elsewhere included

Revision ID: 0006
Revises: 0005
"""
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_trade_opened_at', 'trade', ['opened_at'])


def downgrade() -> None:
    op.drop_index('ix_trade_opened_at', table_name='trade')
