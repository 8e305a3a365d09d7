"""Alembic environment for the clinagent store.

``Store`` runs it programmatically over its own connection (``config.attributes["connection"]``), so the store's
SQLite pragmas and ``BEGIN IMMEDIATE`` apply; ``alembic -c migrations/alembic.ini upgrade head`` builds the same engine
from ``$DATABASE_URL`` (or the default SQLite file).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from clinagent.store import MIGRATE_LOCK, default_url, make_engine
from clinagent.store import SQLModel as _SQLModel

config = context.config
if config.config_file_name and "connection" not in config.attributes:  # the alembic command line: its logging
    from logging.config import fileConfig

    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = _SQLModel.metadata


def _migrate(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":  # two processes opening a Store at once: one migrates
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK})
        context.run_migrations()


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or default_url(),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or default_url())
    try:
        with engine.connect() as conn:
            _migrate(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
