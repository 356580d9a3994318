"""the simulated broker's account and orders, kept across restarts

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

import backend.store.tables

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'sim_account',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('fingerprint', sa.Text(), nullable=False),
        sa.Column('bar_at', backend.store.tables.UTCDateTime(), nullable=False),
        sa.Column('cash', sa.Float(), nullable=False),
        sa.Column('positions', sa.JSON(), nullable=False),
        sa.Column('saved_at', backend.store.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sim_account')),
    )
    op.create_table(
        'sim_order',
        sa.Column('client_order_id', sa.String(length=160), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('ack', sa.JSON(), nullable=False),
        sa.Column('pending', sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint('client_order_id', name=op.f('pk_sim_order')),
    )


def downgrade() -> None:
    op.drop_table('sim_order')
    op.drop_table('sim_account')
