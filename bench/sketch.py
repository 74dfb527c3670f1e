"""Baseline: the design document's TypeScript sketch, ported to Python as faithfully as we can.

``python bench/sketch.py DB [--literal-async] -- PROGRAM ARG...``

What is kept from the sketch, defects included:
  * ``OutputBuffer``: string arrays per stream; a flush is due after 1 s, or when the joined
    buffers exceed 10,000 characters, or when the arrays hold more than 100 entries (the
    sketch calls them lines, but it counts ``data`` events, i.e. pipe reads);
  * each pipe read is decoded on its own (``data.toString()``: UTF-8 with replacement, so a
    character split across two reads is corrupted and binary data is not kept);
  * ``ProgressiveOutputManager``: ``UPDATE executions SET stdout = stdout || ?, stderr =
    stderr || ?`` while the *stdout* total is under 1,000,000 characters (stderr never
    switches), then one ``execution_output_chunks`` row per flush plus the main-table update
    (the sketch's ``updateMainTable(id, '[Output truncated - see logs]')``: it sets
    ``output_truncated``; the sketch does not say more);
  * a ``setInterval`` flush every second, a final flush on close, each statement its own
    transaction, SQLite's default journal mode.

Two ways to run it:
  * default: each data event is awaited before the next read, and the database call is
    synchronous. This is the sketch working as its author intended, and it is what the
    throughput columns measure;
  * ``--literal-async``: what Node really does with that code. ``data`` handlers are not
    awaited by the emitter, the database call yields (a one-thread executor, like
    node-sqlite3's queue), so flushes overlap: each joins the same arrays and clears them
    after its await, storing output several times over and dropping what arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    exit_code INTEGER,
    stdout TEXT DEFAULT '',
    stderr TEXT DEFAULT '',
    progress TEXT,
    last_output_at TIMESTAMP,
    stdout_size INTEGER DEFAULT 0,
    stderr_size INTEGER DEFAULT 0,
    output_truncated BOOLEAN DEFAULT FALSE
);
CREATE TABLE IF NOT EXISTS execution_output_chunks (
    id INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL,
    chunk_index INTEGER NOT NULL,
    stdout TEXT,
    stderr TEXT,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (execution_id) REFERENCES executions(id)
);
CREATE INDEX IF NOT EXISTS idx_output_chunks_execution
ON execution_output_chunks(execution_id, chunk_index);
"""


class Database:
    """``db.run(sql, params)``: synchronous, or yielding to a one-thread executor."""

    def __init__(self, path: str, literal_async: bool) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.executescript(SCHEMA)
        self.executor = ThreadPoolExecutor(max_workers=1) if literal_async else None

    async def run(self, sql: str, params: Any) -> None:
        if self.executor is None:
            self.conn.execute(sql, params)
        else:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.executor, self.conn.execute, sql, params)


class ProgressiveOutputManager:
    max_inline_size = 1_000_000

    def __init__(self, db: Database) -> None:
        self.db = db
        self.total_stdout_size = 0
        self.total_stderr_size = 0
        self.chunk_index = 0

    async def append_output(self, execution_id: str, stdout: str, stderr: str) -> None:
        self.total_stdout_size += len(stdout)
        self.total_stderr_size += len(stderr)
        if self.total_stdout_size < self.max_inline_size:
            await self.db.run(
                "UPDATE executions SET stdout = stdout || ?, stderr = stderr || ?,"
                " last_output_at = CURRENT_TIMESTAMP WHERE id = ?",
                (stdout, stderr, execution_id),
            )
        else:
            await self.db.run(
                "INSERT INTO execution_output_chunks"
                " (execution_id, chunk_index, stdout, stderr, timestamp)"
                " VALUES (?, ?, ?, ?, CURRENT_TIMESTAMP)",
                (execution_id, self.chunk_index, stdout, stderr),
            )
            self.chunk_index += 1
            await self.db.run(
                "UPDATE executions SET output_truncated = TRUE,"
                " last_output_at = CURRENT_TIMESTAMP WHERE id = ?",
                (execution_id,),
            )


class OutputBuffer:
    flush_interval = 1.0
    max_buffer_size = 10_000
    max_buffer_lines = 100

    def __init__(self, execution_id: str, manager: ProgressiveOutputManager) -> None:
        self.execution_id = execution_id
        self.manager = manager
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.last_flush = time.monotonic()

    async def append_stdout(self, data: str) -> None:
        self.stdout.append(data)
        await self.check_flush()

    async def append_stderr(self, data: str) -> None:
        self.stderr.append(data)
        await self.check_flush()

    async def check_flush(self) -> None:
        should_flush = (
            time.monotonic() - self.last_flush > self.flush_interval
            or self.buffer_size() > self.max_buffer_size
            or len(self.stdout) + len(self.stderr) > self.max_buffer_lines
        )
        if should_flush:
            await self.flush()

    async def flush(self) -> None:
        if not self.stdout and not self.stderr:
            return
        stdout_chunk = "".join(self.stdout)
        stderr_chunk = "".join(self.stderr)
        await self.manager.append_output(self.execution_id, stdout_chunk, stderr_chunk)
        self.stdout = []
        self.stderr = []
        self.last_flush = time.monotonic()

    def buffer_size(self) -> int:
        return len("".join(self.stdout)) + len("".join(self.stderr))


async def _pump(
    pipe: IO[bytes], append: Any, literal_async: bool, tasks: set[asyncio.Task[None]]
) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    while data := await reader.read(65536):
        text = data.decode("utf-8", "replace")  # data.toString()
        if literal_async:  # the emitter does not await async listeners
            task = asyncio.ensure_future(append(text))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:
            await append(text)
    transport.close()


async def process_job(db: Database, execution_id: str, command: list[str], literal: bool) -> int:
    await db.run(
        "INSERT INTO executions (id, status, stdout, stderr) VALUES (?, 'running', '', '')",
        (execution_id,),
    )
    buffer = OutputBuffer(execution_id, ProgressiveOutputManager(db))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    tasks: set[asyncio.Task[None]] = set()
    timer = asyncio.ensure_future(_interval(buffer, tasks))
    await asyncio.gather(
        _pump(proc.stdout, buffer.append_stdout, literal, tasks),
        _pump(proc.stderr, buffer.append_stderr, literal, tasks),
    )
    code = await asyncio.to_thread(proc.wait)
    timer.cancel()  # proc.on('exit') clears the interval
    await buffer.flush()  # proc.on('close')
    await db.run(
        "UPDATE executions SET status = 'completed', exit_code = ? WHERE id = ?",
        (code, execution_id),
    )
    while tasks:  # Node keeps running until pending work is done
        await asyncio.gather(*list(tasks))
    return code


async def _interval(buffer: OutputBuffer, tasks: set[asyncio.Task[None]]) -> None:
    while True:
        await asyncio.sleep(buffer.flush_interval)
        task = asyncio.ensure_future(buffer.flush())  # setInterval(() => buffer.flush())
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def read_stream(conn: sqlite3.Connection, execution_id: str, stream: str) -> bytes:
    """The sketch's stored output of one stream: inline column, then overflow rows."""
    col = "stdout" if stream == "stdout" else "stderr"
    row = conn.execute(f"SELECT {col} FROM executions WHERE id = ?", (execution_id,)).fetchone()
    parts = [row[0] or ""]
    parts += [
        r[0] or ""
        for r in conn.execute(
            f"SELECT {col} FROM execution_output_chunks WHERE execution_id = ?"
            " ORDER BY chunk_index, id",
            (execution_id,),
        )
    ]
    return "".join(parts).encode("utf-8")


def tail_lines(conn: sqlite3.Connection, execution_id: str, n: int) -> list[str]:
    """The last ``n`` stdout lines, as a monitor would read them from the sketch's tables."""
    rows = conn.execute(
        "SELECT stdout FROM execution_output_chunks WHERE execution_id = ?"
        " ORDER BY chunk_index DESC LIMIT 50",
        (execution_id,),
    ).fetchall()
    text = "".join(r[0] or "" for r in reversed(rows))
    if text.count("\n") <= n:
        row = conn.execute("SELECT stdout FROM executions WHERE id = ?", (execution_id,)).fetchone()
        text = (row[0] if row else "") + text
    return text.splitlines()[-n:]


def main(argv: list[str]) -> int:
    literal = "--literal-async" in argv
    db_path, command = argv[0], argv[argv.index("--") + 1 :]
    execution_id = os.environ.get("BENCH_EXECUTION_ID", "1")
    return asyncio.run(process_job(Database(db_path, literal), execution_id, command, literal))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
