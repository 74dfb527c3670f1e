"""The fault-injection suite: real processes and real databases, bad luck and bad input.

Tests that take ``db_url`` run on SQLite, then on PostgreSQL (see
tests/integration/conftest.py); everything is bounded by deadlines, never by
timing thresholds.
"""

from __future__ import annotations

from tests.integration.conftest import db_url, small_disk, spool
from tests.web.conftest import client, serve, served

__all__ = ["client", "db_url", "serve", "served", "small_disk", "spool"]
