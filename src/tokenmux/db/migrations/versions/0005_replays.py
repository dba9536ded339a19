"""The row a replayed keyed request points to.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("replay_of", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("replay_of")
