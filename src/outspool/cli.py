"""The command line: parse, call the library, format. Nothing else lives here."""

from __future__ import annotations

import codecs
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

import click

from outspool import __version__
from outspool.client import Outspool, Running
from outspool.errors import InvalidStateError, OutspoolError
from outspool.isolation import become_subreaper
from outspool.jobs import Job
from outspool.models import Execution, Status, Stream
from outspool.process import limit_malloc_arenas
from outspool.settings import Settings
from outspool.worker import Worker

F = TypeVar("F", bound=Callable[..., Any])
STREAMS = {"stdout": Stream.STDOUT, "stderr": Stream.STDERR, "all": None}
EXIT_USAGE = 2
EXIT_TIMEOUT = 124


def db_option(func: F) -> F:
    return click.option(
        "--db",
        metavar="DB",
        help="Database: a file path, sqlite:///path or postgresql://... "
        "[default: $OUTSPOOL_DB, else a file in your data directory]",
    )(func)


def _parse_env(
    ctx: click.Context, param: click.Parameter, pairs: tuple[str, ...]
) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", ctx, param)
        env[key] = value
    return env


def _limit_options() -> list[Callable[[F], F]]:
    """The sandbox's network, the resource limits and the secrets of a job."""
    return [
        click.option("--network", is_flag=True, help="Keep the network in the sandbox."),
        click.option(
            "--cpu-time",
            type=click.FloatRange(min=0, min_open=True),
            metavar="SECONDS",
            help="CPU seconds each process may use (reason: cpu time limit).",
        ),
        click.option(
            "--memory",
            type=click.IntRange(min=1),
            metavar="BYTES",
            help="Memory of all its processes together (reason: memory limit).",
        ),
        click.option(
            "--max-processes",
            type=click.IntRange(min=1),
            metavar="N",
            help="Processes and threads at once (reason: process limit).",
        ),
        click.option(
            "--max-file-size",
            type=click.IntRange(min=1),
            metavar="BYTES",
            help="Largest file it may write (reason: file size limit).",
        ),
        click.option(
            "--secret",
            "secrets",
            multiple=True,
            metavar="NAME[=VALUE]",
            callback=_parse_secrets,
            help="A variable masked as [MASKED] in the output and never shown; "
            "NAME alone takes the value from this environment (repeatable).",
        ),
    ]


def program_options(timeout_help: str) -> Callable[[F], F]:
    """What to run and how, shared by ``run`` and ``submit``: one option per field of
    :class:`~outspool.jobs.Job`, named like it (see :func:`job_of`)."""

    def apply(func: F) -> F:
        options = [
            click.option("--name", help="A name to find the execution by."),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                metavar="SECONDS",
                help=timeout_help,
            ),
            click.option(
                "--pty", is_flag=True, help="Run on a pseudo-terminal (stdout and stderr merge)."
            ),
            click.option("--language", help="Run CODE with this language (python, bash, sh, ...)."),
            click.option("--code", help="The code to run with --language."),
            click.option(
                "--env",
                multiple=True,
                metavar="KEY=VALUE",
                callback=_parse_env,
                help="A variable for the program (repeatable).",
            ),
            click.option(
                "--cwd",
                metavar="DIR",
                help="Working directory [default: run: the current one; "
                "submit: a fresh temporary one].",
            ),
            *_limit_options(),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return apply


def _parse_secrets(
    ctx: click.Context, param: click.Parameter, args: tuple[str, ...]
) -> dict[str, str]:
    """``NAME=VALUE`` or ``NAME`` (its value from our environment)."""
    found: dict[str, str] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        if not name.isidentifier():
            raise click.BadParameter(f"{name!r} is not a variable name", ctx, param)
        if not sep:
            if name not in os.environ:
                raise click.BadParameter(f"{name} is not set in this environment", ctx, param)
            value = os.environ[name]
        found[name] = value
    return found


def job_of(command: tuple[str, ...], options: dict[str, Any]) -> Job:
    """The job of ``run``/``submit``: exactly one of a COMMAND or --language (with --code)."""
    if bool(command) == bool(options["language"]):
        raise click.UsageError("give a COMMAND after --, or --language with --code")
    if options["language"] and options["code"] is None:
        raise click.UsageError("--language needs --code")
    return Job(command=command, **options)


@contextmanager
def spool(db: str | None, *, create: bool = True) -> Iterator[Outspool]:
    """The library on ``db``; ``create=False`` (read-only commands) never creates a store."""
    with Outspool(db, Settings.load(), create=create) as opened:
        yield opened


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="outspool")
def cli() -> None:
    """Capture every byte a program prints, watch it live, keep it in a database."""


# --- run ---------------------------------------------------------------------------------


@cli.command(context_settings={"ignore_unknown_options": False})
@db_option
@program_options("Stop the program (SIGTERM, then SIGKILL) after this long; exit 124.")
@click.option("--quiet", "-q", is_flag=True, help="Capture only; do not echo the output.")
@click.option("--sandbox", is_flag=True, help="Run it in a bubblewrap sandbox (see --network).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(
    db: str | None, quiet: bool, sandbox: bool, command: tuple[str, ...], **options: Any
) -> None:
    """Run COMMAND, show its output live and capture every byte of it.

    \b
    outspool run -- make test
    outspool run --language python --code 'print(42)'

    Exits with COMMAND's exit code (128+N if killed by signal N, 124 on timeout).
    """
    job = job_of(command, options)
    if job.network and not sandbox:
        raise click.UsageError("--network needs --sandbox")
    become_subreaper()  # leftovers of the program become ours, to be killed at its end
    with spool(db) as sp:
        handle = sp.start(
            job,
            echo=not quiet,
            stdin=None,
            on_created=lambda ex: click.echo(f"outspool: execution {ex.id}", err=True),
            sandbox=sandbox,
        )
        final = _wait_forwarding_signals(handle)
    sys.exit(_exit_code(final))


def _wait_forwarding_signals(handle: Running) -> Execution:
    """Wait for the run; SIGINT/SIGTERM/SIGHUP stop the program (twice: at once)."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        reason = f"interrupted by {signal.Signals(signum).name}"
        handle.cancel(reason, force=len(received) > 1)

    previous = {
        s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        while True:
            try:
                final = handle.wait(0.2)
                break
            except TimeoutError:
                continue
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if received and final.status is Status.CANCELLED:
        sys.exit(128 + received[0])
    return final


def _exit_code(ex: Execution) -> int:
    if ex.status is Status.TIMED_OUT:
        return EXIT_TIMEOUT
    if ex.signal is not None:
        return 128 + ex.signal
    return ex.exit_code if ex.exit_code is not None else 1


# --- logs --------------------------------------------------------------------------------


@cli.command()
@db_option
@click.argument("execution_id", metavar="ID")
@click.option("--stream", type=click.Choice(list(STREAMS)), default="all", show_default=True)
@click.option(
    "--tail", "tail_lines", type=click.IntRange(min=0), metavar="N", help="Only the last N lines."
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until it ends.")
@click.option("--raw", is_flag=True, help="Write the exact stored bytes (no UTF-8 decoding).")
def logs(
    db: str | None,
    execution_id: str,
    stream: str,
    tail_lines: int | None,
    follow: bool,
    raw: bool,
) -> None:
    """Print the output of execution ID (a unique prefix is enough)."""
    which = STREAMS[stream]
    out = _Printer(raw)
    with spool(db, create=False) as sp:
        ex = sp.get(execution_id)
        offset = 0
        if tail_lines is not None:
            last = sp.tail(ex.id, tail_lines, which)
            out.write(last.data)
            offset = last.next_offset
        elif not follow:
            for piece in sp.iter_output(ex.id, which):
                out.write(piece)
        if follow:
            _follow(sp, ex.id, which, offset, out)
    out.close()


def _follow(
    sp: Outspool, execution_id: str, which: Stream | None, offset: int, out: _Printer
) -> None:
    """Print new output until the execution ends, or until the process capturing it
    is found lost (then it is marked ``lost`` and the follow ends; nothing is killed)."""
    for _, piece in sp.follow(execution_id, which, offset):
        out.write(piece)


class _Printer:
    """Writes output bytes to stdout: exact with --raw, else decoded as UTF-8 with
    replacement (a character split across two chunks is decoded whole)."""

    def __init__(self, raw: bool) -> None:
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._out = sys.stdout.buffer

    def write(self, data: bytes) -> None:
        if not self._raw:
            data = self._decoder.decode(data).encode("utf-8", "surrogateescape")
        if data:
            self._out.write(data)
            self._out.flush()

    def close(self) -> None:
        if not self._raw:
            self.write(self._decoder.decode(b"", final=True).encode())
        self._out.flush()


# --- show / ls ---------------------------------------------------------------------------


@cli.command()
@db_option
@click.argument("execution_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def show(db: str | None, execution_id: str, as_json: bool) -> None:
    """Show the record of execution ID: status, exit code, sizes, progress."""
    with spool(db, create=False) as sp:
        ex = sp.get(execution_id)
    if as_json:
        click.echo(json.dumps(ex.to_json(), indent=2))
        return
    for key, value in ex.to_json().items():
        if value is not None and value != "":
            shown = " ".join(value) if key == "command" else value
            click.echo(f"{key + ':':<18}{shown}")


@cli.command(name="ls")
@db_option
@click.option("--json", "as_json", is_flag=True, help="A JSON array.")
@click.option("--status", type=click.Choice([s.value for s in Status]), help="Only this status.")
@click.option("--limit", type=click.IntRange(min=1, max=10_000), default=20, show_default=True)
def ls(db: str | None, as_json: bool, status: str | None, limit: int) -> None:
    """List executions, newest first."""
    with spool(db, create=False) as sp:
        found = sp.list(Status(status) if status else None, limit)
    if as_json:
        click.echo(json.dumps([ex.to_json() for ex in found], indent=2))
        return
    click.echo(
        f"{'ID':<16}  {'STATUS':<9}  {'EXIT':>4}  {'STARTED':<19}  {'OUTPUT':>9}  "
        f"{'PROGRESS':<16}  COMMAND"
    )
    for ex in found:
        click.echo(_row(ex))


def _row(ex: Execution) -> str:
    code = "" if ex.exit_code is None else str(ex.exit_code)
    if ex.signal is not None:
        code = f"-{ex.signal}"
    started = (ex.to_json()["started_at"] or "")[:19].replace("T", " ")
    size = _human(ex.stdout_size + ex.stderr_size)
    progress = (ex.progress or "")[:16]
    what = ex.name or " ".join(ex.command)
    return (
        f"{ex.id:<16}  {ex.status.value:<9}  {code:>4}  {started:<19}  {size:>9}  "
        f"{progress:<16}  {what[:60]}"
    )


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# --- the queue ---------------------------------------------------------------------------


@cli.command()
@db_option
@program_options("Stop the program after this long (status timed_out).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def submit(db: str | None, command: tuple[str, ...], **options: Any) -> None:
    """Queue COMMAND (or --language/--code) for a worker; prints the new execution's ID.

    \b
    outspool submit -- make test
    outspool submit --language python --code 'print(42)' --timeout 60
    """
    job = job_of(command, options)
    with spool(db) as sp:
        click.echo(sp.submit(job).id)


@cli.command()
@db_option
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1, max=1024),
    metavar="N",
    help="Run up to N programs at once [default: CPU count].",
)
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
def worker(db: str | None, concurrency: int | None, burst: bool) -> None:
    """Run queued executions until stopped (SIGTERM/SIGINT: drain; twice: stop now)."""
    w = Worker(db, Settings.load(), concurrency, burst)
    become_subreaper()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        w.stop(force=w.stopping)  # the second signal stops at once

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    w.run()


@cli.command()
@db_option
@click.argument("execution_id", metavar="ID")
def cancel(db: str | None, execution_id: str) -> None:
    """Cancel execution ID: a queued one never starts, a running one is stopped."""
    with spool(db) as sp:
        try:
            ex = sp.cancel(execution_id)
        except InvalidStateError as exc:
            click.echo(f"outspool: {exc}", err=True)
            return
    what = "cancelled" if ex.status is Status.CANCELLED else "asked to stop"
    click.echo(f"{ex.id} {what}")


@cli.command()
@db_option
def recover(db: str | None) -> None:
    """Mark as lost the running executions whose worker stopped heartbeating."""
    with spool(db) as sp:
        lost = sp.recover()
    for execution_id in lost:
        click.echo(f"{execution_id} lost")
    click.echo(f"{len(lost)} execution(s) marked lost", err=True)


# --- web ---------------------------------------------------------------------------------


@cli.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8765, show_default=True)
@click.option(
    "--token",
    help="Bearer token required on every request [env: OUTSPOOL_TOKEN]; "
    "mandatory when binding beyond loopback.",
)
def serve(db: str | None, host: str, port: int, token: str | None) -> None:
    """Serve the live monitor: JSON API under /api, live streams, and a web page."""
    try:
        from outspool.web.server import serve as run_server
    except ImportError as exc:
        raise OutspoolError(f"the web monitor needs: pip install 'outspool[web]' ({exc})") from None
    settings = Settings.load()
    run_server(db, settings, host=host, port=port, token=token or settings.token)


# --- entry point -------------------------------------------------------------------------


class _Lines(logging.Formatter):
    """The library's log records as the CLI's lines: ``outspool: ...``, ``outspool worker: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        who = "outspool worker" if record.name == "outspool.worker" else "outspool"
        line = f"{who}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def show_library_messages() -> None:
    """Print the library's messages (``logging.getLogger("outspool")``) on stderr."""
    logger = logging.getLogger("outspool")
    if any(isinstance(h.formatter, _Lines) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Lines())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: user mistakes get one line on stderr and exit code 2, never a traceback."""
    limit_malloc_arenas()
    show_library_messages()
    try:
        cli.main(args=argv, prog_name="outspool", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"outspool: {exc.format_message()}{hint}", err=True)
        sys.exit(EXIT_USAGE)
    except click.Abort:
        sys.exit(130)
    except OutspoolError as exc:
        click.echo(f"outspool: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except BrokenPipeError:
        sys.exit(0)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
