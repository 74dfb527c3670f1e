"""Stores: where outspool keeps executions and their output.

``open_store(url)`` picks the backend from the URL: a plain path or
``sqlite:///path`` is SQLite (the default); ``postgresql://...`` is PostgreSQL.
The verbs are written once (``core.py``, over the named blocks in ``sql/``); each
backend module supplies its connections, transactions and chunk payloads.
"""

from __future__ import annotations

import re
from pathlib import Path

import platformdirs

from outspool.errors import StoreError
from outspool.settings import Settings
from outspool.store.base import SCHEMA_VERSION, OutputUpdate, Store, WriteBatch
from outspool.store.core import SqlStore

__all__ = [
    "SCHEMA_VERSION",
    "OutputUpdate",
    "Store",
    "WriteBatch",
    "default_db",
    "open_store",
]


def default_db() -> str:
    """The SQLite file used when neither ``--db`` nor ``OUTSPOOL_DB`` is given."""
    return str(Path(platformdirs.user_data_dir("outspool")) / "outspool.db")


def _refuse_unknown_scheme(url: str) -> None:
    """``mysql://x/y`` is a mistake, not a relative path ``mysql:/x/y`` to create."""
    found = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if found and found.group(1).lower() != "sqlite":
        raise StoreError(
            f"unknown database URL scheme {found.group(1)!r} in {url!r}: "
            "use a file path, sqlite:///path or postgresql://..."
        )


def open_store(
    url: str | None = None, settings: Settings | None = None, *, create: bool = True
) -> Store:
    """Open (creating or upgrading) the store at ``url``, else settings.db, else default_db().

    ``create=False`` opens only a store that exists: a missing one is a StoreError
    and nothing is created (no folder, no file). Readers use it.
    """
    settings = settings or Settings.load()
    url = url or settings.db or default_db()
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from outspool.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"PostgreSQL support needs psycopg: pip install 'outspool[postgres]' ({exc})"
            ) from None
        store: SqlStore = PostgresStore(url, settings)
    else:
        _refuse_unknown_scheme(url)
        from outspool.store.sqlite import SqliteStore

        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
        if url.startswith("sqlite://") and not url.startswith("sqlite:///"):
            raise StoreError(f"bad database URL {url!r}: use sqlite:///path/to/file.db")
        store = SqliteStore(path, settings.busy_timeout, settings.poll_interval)
    try:
        store.migrate(create)
    except BaseException:
        store.close()
        raise
    return store
