"""A key's spending budget: US dollars per UTC day, per UTC month or in all.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("budget_usd", sa.Numeric(20, 10)))
        batch.add_column(sa.Column("budget_period", sa.String(8)))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("budget_period")
        batch.drop_column("budget_usd")
