"""exposure menu, counterfactual cells, shadow trades

The Q-table's cells become decayed reward sums per (state or pooled level, exposure). Rows in the old
`size_mult|leverage` format are carried over onto the exposure menu (backend.domain.state.legacy_action_exposure,
with the default caps' menu): each old Q value counts as `visits` rewards of that value; several old actions
landing on one exposure are added up.

Revision ID: 0002
Revises: 0001
"""
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

import backend.store.tables
from backend.domain.state import action_key, exposure_menu, legacy_action_exposure

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

DEFAULT_MENU = exposure_menu(3.0)


def upgrade() -> None:
    conn = op.get_bind()
    old = conn.execute(sa.text("SELECT state_key, action_key, q, visits, updated_at FROM q_value")).all()
    with op.batch_alter_table('q_value') as batch:
        batch.drop_column('q')
        batch.add_column(sa.Column('weight', sa.Float(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('reward_sum', sa.Float(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('reward_sq_sum', sa.Float(), nullable=False, server_default='0'))
    conn.execute(sa.text("DELETE FROM q_value"))
    cells = defaultdict(lambda: [0, 0.0, 0.0, None])
    for state, action, q, visits, updated_at in old:
        if "|" not in action or visits <= 0:
            continue
        cell = cells[(state, action_key(legacy_action_exposure(action, DEFAULT_MENU)))]
        cell[0] += visits
        cell[1] += q * visits
        cell[2] += q * q * visits
        cell[3] = updated_at
    q_value = sa.table('q_value', sa.column('state_key'), sa.column('action_key'), sa.column('visits'),
                       sa.column('weight'), sa.column('reward_sum'), sa.column('reward_sq_sum'),
                       sa.column('updated_at'))
    if cells:
        op.bulk_insert(q_value, [
            {"state_key": s, "action_key": a, "visits": n, "weight": float(n), "reward_sum": s1,
             "reward_sq_sum": s2, "updated_at": at} for (s, a), (n, s1, s2, at) in cells.items()])
    with op.batch_alter_table('agent') as batch:
        batch.drop_column('alpha')
    with op.batch_alter_table('trade') as batch:
        batch.add_column(sa.Column('shadow', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('decided_at', backend.store.tables.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('decision_price', sa.Float(), nullable=True))
        batch.add_column(sa.Column('worst_price', sa.Float(), nullable=True))
    with op.batch_alter_table('outcome') as batch:
        batch.drop_column('q_after')
        batch.add_column(sa.Column('exposure', sa.Float(), nullable=True))
        batch.add_column(sa.Column('trade_return', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outcome') as batch:
        batch.drop_column('trade_return')
        batch.drop_column('exposure')
        batch.add_column(sa.Column('q_after', sa.Float(), nullable=True))
    with op.batch_alter_table('trade') as batch:
        batch.drop_column('worst_price')
        batch.drop_column('decision_price')
        batch.drop_column('decided_at')
        batch.drop_column('shadow')
    with op.batch_alter_table('agent') as batch:
        batch.add_column(sa.Column('alpha', sa.Float(), nullable=False, server_default='0.15'))
    conn = op.get_bind()
    conn.execute(sa.text("DELETE FROM q_value"))  # exposure cells have no size_mult|leverage form
    with op.batch_alter_table('q_value') as batch:
        batch.drop_column('reward_sq_sum')
        batch.drop_column('reward_sum')
        batch.drop_column('weight')
        batch.add_column(sa.Column('q', sa.Float(), nullable=False, server_default='0'))
