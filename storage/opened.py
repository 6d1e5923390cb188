"""Opening what a process of xrayd stores into: the database, the spool and the byte store.

:func:`open_storage` connects to ``storage.database_url``, creates the schema of an empty
database (or refuses an outdated one), and opens the spool and the byte store of
``[object_store]``, failing with messages that name the settings keys.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from config.errors import ConfigError
from config.settings import Settings
from storage.bytestore import ByteStore, open_byte_store
from storage.db import Sessions, check_connection, make_engine, make_sessionmaker
from storage.errors import DatabaseUnavailableError, SchemaOutdatedError
from storage.migrate import current_revision, head_revision, schema_state, upgrade
from storage.spool import Spool

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Storage:
    """The opened database, spool and byte store.

    ``store`` holds the bytes of received instances and result objects: the spool itself
    (``[object_store] backend = "local"``) or an S3-compatible object store shared by the
    listener and worker hosts (``"s3"``: the spool then holds only temporary files).
    """

    engine: Engine
    sessions: Sessions
    spool: Spool
    store: ByteStore

    @property
    def on_postgresql(self) -> bool:
        """Whether the database is PostgreSQL (LISTEN/NOTIFY wake-ups are available)."""
        return self.engine.dialect.name == "postgresql"

    def close(self) -> None:
        """Close the database's connections (the process is done with this storage)."""
        self.engine.dispose()


def open_storage(settings: Settings, *, create_if_empty: bool, require_current: bool) -> Storage:
    """Open the database, spool and byte store, failing with messages that name the settings
    keys."""
    data_dir = settings.storage.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        Spool(settings.spool_dir).tmp_dir()
    except OSError as exc:
        raise ConfigError(f"storage.data_dir: cannot use {data_dir}: {exc.strerror}") from None
    engine = make_engine(settings.database_url, password=settings.database_password())
    try:
        check_connection(engine)
    except DatabaseUnavailableError as exc:
        raise DatabaseUnavailableError(f"storage.database_url: {exc}") from None
    state = schema_state(engine)
    if state == "empty" and create_if_empty:
        LOGGER.info("empty database: creating the schema")
        upgrade(engine)
    elif require_current and state != "current":
        have = current_revision(engine) or "none"
        raise SchemaOutdatedError(
            f"the database schema is at revision {have}, this xrayd needs {head_revision()}: "
            "run `xrayd db upgrade` first"
        )
    spool = Spool(settings.spool_dir)
    try:
        store = open_byte_store(settings.object_store, spool)
    except BaseException:
        engine.dispose()
        raise
    return Storage(engine, make_sessionmaker(engine), spool, store)
