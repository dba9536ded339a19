"""The process that served each request (host and worker index), now that many may.

Revision ID: 0007
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("instance", sa.String(128)))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("instance")
