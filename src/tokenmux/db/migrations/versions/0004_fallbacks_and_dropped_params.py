"""Each key's default fallbacks and parameter strictness, and the request fields each request
had dropped.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("fallback_models", sa.Text))  # a JSON array of model names
        batch.add_column(sa.Column("fallback_timeout_ms", sa.Integer))
        batch.add_column(sa.Column("strict_params", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("dropped_params", sa.String(256)))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("dropped_params")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("strict_params")
        batch.drop_column("fallback_timeout_ms")
        batch.drop_column("fallback_models")
