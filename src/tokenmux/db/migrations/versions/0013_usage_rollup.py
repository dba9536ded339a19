"""The usage aggregates by day and the days they wait for (admin/rollup.py).

Every day that already has usage rows is marked, so the gateway's rollup builds them in the
background and a summary reads those days from the rows until it has.

Revision ID: 0013
Revises: 0012
"""

import random
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_rollup",
        sa.Column("grain", sa.String(4), nullable=False),
        sa.Column("period", sa.Integer, nullable=False),
        sa.Column("dims", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(32)),
        sa.Column("key_name", sa.String(200)),
        sa.Column("model", sa.String(256)),
        sa.Column("provider", sa.String(128)),
        sa.Column("end_user", sa.String(256)),
        sa.Column("door", sa.String(16)),
        sa.Column("status", sa.Integer),
        sa.Column("error_code", sa.String(64)),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_tokens", sa.BigInteger, nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.String(40)),
        sa.Column("latency", sa.Text, nullable=False),
        sa.Column("ttft", sa.Text, nullable=False),
    )
    op.create_index("ix_usage_rollup_read", "usage_rollup", ["grain", "dims", "period"])
    dirty = op.create_table(
        "usage_dirty",
        sa.Column("day", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("mark", sa.BigInteger, nullable=False),
    )
    bind = op.get_bind()
    usage = sa.table("usage", sa.column("created_at", sa.DateTime(timezone=True)))
    first, last = bind.execute(
        sa.select(sa.func.min(usage.c.created_at), sa.func.max(usage.c.created_at))).one()
    if first is None:
        return
    # Every day from the first row to the last: a day with none costs the rollup one empty pass.
    days = range(_day(first), _day(last) + 1)
    op.bulk_insert(dirty, [{"day": day, "mark": random.getrandbits(62)} for day in days])


def _day(at: datetime) -> int:
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() // 86400)


def downgrade() -> None:
    op.drop_table("usage_dirty")
    op.drop_index("ix_usage_rollup_read", table_name="usage_rollup")
    op.drop_table("usage_rollup")
