"""Indexes for the operators' console: usage filtered by provider or end user, each within a
time range.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_usage_provider_created": ["provider", "created_at"],
    "ix_usage_user_created": ["end_user", "created_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "usage", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="usage")
