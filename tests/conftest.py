"""Fixtures for every layer: a database path, an opened Outspool, the CLI, clean-up."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from outspool import Outspool, Running, Settings
from tests.helpers import CLI, CliResult, cli_env
from tests.helpers import run_cli as _run_cli

RunCli = Callable[..., CliResult]
SpawnCli = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture(autouse=True)
def _no_outspool_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no OUTSPOOL_* variable of the machine they run on."""
    for key in list(os.environ):
        if key.startswith("OUTSPOOL_"):
            monkeypatch.delenv(key)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "outspool.db"


@pytest.fixture
def settings() -> Settings:
    """Defaults, except short grace periods so stopping programs is quick, and workers
    that share files with their programs (no sandbox; see tests/helpers.UNSANDBOXED)."""
    return Settings.load(kill_grace=0.5, drain_grace=0.5, sandbox="none")


@pytest.fixture
def spool(db_path: Path, settings: Settings) -> Iterator[Outspool]:
    with Outspool(str(db_path), settings) as opened:
        yield opened


@pytest.fixture
def handles(spool: Outspool) -> Iterator[list[Running]]:
    """Append every started execution here; teardown kills what is still running."""
    started: list[Running] = []
    yield started
    for handle in started:
        if not handle.join(0):
            handle.cancel("test teardown", force=True)
            handle.join(30)


@pytest.fixture
def run_cli() -> RunCli:
    """``run_cli(*args, env=..., timeout=...)``: run the CLI to its end; (rc, stdout, stderr)."""
    return _run_cli


@pytest.fixture
def spawn_cli() -> Iterator[SpawnCli]:
    """Start ``outspool ARGS...`` in the background; teardown kills any still running."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [*CLI, *args],
            env=cli_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
