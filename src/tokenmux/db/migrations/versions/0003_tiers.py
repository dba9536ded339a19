"""Service tiers: each key's default and cap, and each request's tier and queue wait.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("tier", sa.String(16)))
        batch.add_column(sa.Column("max_tier", sa.String(16)))
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("tier", sa.String(16)))
        batch.add_column(sa.Column("queue_ms", sa.Float, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("queue_ms")
        batch.drop_column("tier")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("max_tier")
        batch.drop_column("tier")
