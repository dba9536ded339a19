"""The API each request came in through (chat completions, Anthropic messages, responses,
embeddings), now that there is more than one.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("door", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("door")
