"""Opens the configured database and brings its schema to the newest migration."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def database_url(database: str) -> str:
    """A plain path is a SQLite file; anything with a scheme is used as a SQLAlchemy URL."""
    if "://" not in database:
        return f"sqlite:///{database}"
    url = make_url(database)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the CLI read and write while a gateway holds the file; the busy timeout makes
    # writers queue for each other instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    # An upsert of many rows keeps a statement journal (to undo it alone should it fail
    # halfway): in memory, not in a temp file created, written page by page and deleted for
    # every batch of the ledger (bench/README.md, "The ledger's writer and the interpreter lock").
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


# A database across a network: a connection whose peer went silent (a partition, a host gone)
# is given up within about half a minute, instead of holding the ledger's writer forever.
_NETWORK = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
            "keepalives_interval": 5, "keepalives_count": 3, "tcp_user_timeout": 30_000}


def connect(database: str, *, migrate: bool = True) -> Engine:
    url = database_url(database)
    engine = create_engine(url, pool_pre_ping="sqlite" not in url,
                           connect_args=_NETWORK if url.startswith("postgresql") else {})
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _tune_sqlite)
    if migrate:
        upgrade(engine)
    return engine


# Any fixed number will do, as long as nothing else on the server takes the same lock.
_MIGRATION_LOCK = 0x746F6B656E6D7578 & 0x7FFFFFFFFFFFFFFF  # "tokenmux"


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("tokenmux.db") / "migrations"))
    return cfg


def upgrade(engine: Engine) -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration is noise
    cfg = alembic_config()
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Gateways starting together on one database migrate one at a time: the first
            # migrates, the others find the schema current. Released with the transaction.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
