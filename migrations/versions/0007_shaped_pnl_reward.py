"""the reward once named `seed` is `shaped_pnl`: outcomes learned under the old name are renamed with it

Revision ID: 0007
Revises: 0006
"""
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE outcome SET reward_fn = 'shaped_pnl' WHERE reward_fn = 'seed'")


def downgrade() -> None:
    op.execute("UPDATE outcome SET reward_fn = 'seed' WHERE reward_fn = 'shaped_pnl'")
