"""Each key's compression default, and the ledger's compression accounting: the summariser's
calls as rows of their own (kind, parent_id) and a request's tokens before and after.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("compression", sa.String(16)))
        batch.add_column(sa.Column("compression_model", sa.String(256)))
        batch.add_column(sa.Column("compression_threshold", sa.Integer))
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("kind", sa.String(16)))
        batch.add_column(sa.Column("parent_id", sa.String(32)))
        batch.add_column(sa.Column("tokens_before", sa.Integer))
        batch.add_column(sa.Column("tokens_after", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("tokens_after")
        batch.drop_column("tokens_before")
        batch.drop_column("parent_id")
        batch.drop_column("kind")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("compression_threshold")
        batch.drop_column("compression_model")
        batch.drop_column("compression")
