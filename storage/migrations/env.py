"""Alembic environment for xrayd.

Run through :mod:`storage.migrate`, which builds an ``alembic.config.Config`` in code (there is
no alembic.ini) and passes an open connection in ``config.attributes["connection"]``.
SQLite needs ``render_as_batch`` so that later ALTERs are done by copying the table.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from storage.schema import Base

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("offline migrations need the sqlalchemy.url main option")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "storage.migrate passes an open connection in config.attributes['connection']"
        )
    _configure_and_run(connection)


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
