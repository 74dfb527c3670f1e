"""Stored output survives format upgrades: a version-1 SQLite file opens as the current one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from outspool import Outspool, Settings
from outspool.codec import Encoder
from outspool.models import Stream
from outspool.queue import recover
from outspool.store import SCHEMA_VERSION
from outspool.store.core import statements
from outspool.store.queries import load


def make_v1(path: Path) -> None:
    """A database as outspool's first format wrote it, with one finished and one running run."""
    sql = load("sqlite")
    chunk = Encoder().encode("old1", 0, (0, 0), [(Stream.STDOUT, b"kept\n")], 1.0)
    with sqlite3.connect(path) as conn:
        conn.execute(sql["schema_version_table"])
        for statement in statements(sql["migrate_1"]):
            conn.execute(statement)
        conn.execute("INSERT INTO outspool_schema (version) VALUES (1)")
        for execution_id, status in (("old1", "succeeded"), ("old2", "running")):
            conn.execute(
                "INSERT INTO executions (id, status, command, created_at, stdout_size, chunk_count)"
                " VALUES (?, ?, '[\"echo\"]', 1.0, ?, ?)",
                (
                    execution_id,
                    status,
                    5 if execution_id == "old1" else 0,
                    int(execution_id == "old1"),
                ),
            )
        conn.execute(
            "INSERT INTO execution_output_chunks (execution_id, chunk_index, stdout_offset,"
            " stdout_size, stderr_offset, stderr_size, codec, timestamp, runs, stdout, stderr)"
            " VALUES (?, 0, 0, ?, 0, 0, ?, 1.0, NULL, ?, NULL)",
            ("old1", chunk.stdout_size, chunk.codec, chunk.stdout),
        )


def test_a_version_1_database_is_upgraded_and_keeps_its_output(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    make_v1(path)
    with Outspool(str(path)) as spool:
        assert spool.read("old1") == b"kept\n"
        assert spool.get("old1").cancel_requested is False
        # the running execution of version 1 has no worker: recovery ends it as lost
        assert recover(spool.store, Settings.load()) == ["old2"]
        assert spool.get("old2").status.value == "lost"
        assert spool.run(["echo", "new"]).stdout_size == 4
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM outspool_schema").fetchall() == [(SCHEMA_VERSION,)]
