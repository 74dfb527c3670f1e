"""A PostgreSQL server for tests: where it is, whether it answers, a fresh schema per test.

The server is ``OUTSPOOL_TEST_DSN`` (default :data:`DEFAULT_DSN`). When it does
not answer, tests that need it are skipped with a reason saying how to point
them at one, unless ``OUTSPOOL_TEST_POSTGRES=required`` (CI), which fails them.
Each test gets its own schema (``?schema=t_...`` in the URL), dropped at teardown.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from functools import cache

import psycopg
import pytest
from psycopg import sql

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
# Read at import: the root conftest hides OUTSPOOL_* variables from the tests themselves.
DSN = os.environ.get("OUTSPOOL_TEST_DSN") or DEFAULT_DSN
REQUIRED = os.environ.get("OUTSPOOL_TEST_POSTGRES", "").lower() == "required"


def admin() -> psycopg.Connection[tuple[object, ...]]:
    """A plain autocommit connection to the test database (caller closes)."""
    return psycopg.connect(DSN, autocommit=True, connect_timeout=5)


@cache
def unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when the server answers."""
    try:
        with contextlib.closing(admin()):
            return None
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (
            f"no PostgreSQL at {DSN} ({first}); set OUTSPOOL_TEST_DSN=postgresql://user@host/db "
            "to point the tests at a server (OUTSPOOL_TEST_POSTGRES=required makes this fail)"
        )


def require() -> None:
    """Skip the calling test when there is no server; fail instead when it is required."""
    reason = unavailable()
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"OUTSPOOL_TEST_POSTGRES=required but {reason}", pytrace=False)
        pytest.skip(reason)


def with_schema(dsn: str, schema: str) -> str:
    """``dsn`` with ``?schema=`` (or ``&schema=``) appended."""
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL naming a schema no one else uses; the schema and its tables are dropped after."""
    require()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield with_schema(DSN, schema)
    finally:
        with contextlib.closing(admin()) as conn:
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
