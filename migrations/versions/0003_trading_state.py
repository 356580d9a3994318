"""trading state and its change log

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

import backend.store.tables

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'trading_state',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('cause', sa.String(length=32), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('changed_at', backend.store.tables.UTCDateTime(), nullable=True),
        sa.Column('manual_state', sa.String(length=16), nullable=True),
        sa.Column('manual_reason', sa.Text(), nullable=False),
        sa.Column('day', sa.String(length=10), nullable=True),
        sa.Column('day_start_equity', sa.Float(), nullable=True),
        sa.Column('peak_equity', sa.Float(), nullable=True),
        sa.Column('reset_at', backend.store.tables.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_trading_state')),
    )
    trading_state = sa.table('trading_state', sa.column('id'), sa.column('state'), sa.column('cause'),
                             sa.column('reason'), sa.column('manual_reason'))
    op.bulk_insert(trading_state, [{"id": 1, "state": "ACTIVE", "cause": "", "reason": "", "manual_reason": ""}])
    op.create_table(
        'trading_state_change',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('at', backend.store.tables.UTCDateTime(), nullable=False),
        sa.Column('from_state', sa.String(length=16), nullable=False),
        sa.Column('to_state', sa.String(length=16), nullable=False),
        sa.Column('cause', sa.String(length=32), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('logged_at', backend.store.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_trading_state_change')),
    )


def downgrade() -> None:
    op.drop_table('trading_state_change')
    op.drop_table('trading_state')
