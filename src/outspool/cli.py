"""The command line: parse, call the library, format. Nothing else lives here."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn, TypeVar

import click

from outspool import __version__, display, heap, labels, watch
from outspool.client import Outspool, Running
from outspool.errors import ConfigError, InvalidStateError, OutspoolError
from outspool.follow import Gap
from outspool.isolation import become_subreaper
from outspool.jobs import Job
from outspool.lines import LineSplitter
from outspool.logview import LineView
from outspool.models import Execution, Status, Stream
from outspool.search import Window, compile_pattern
from outspool.settings import MAX_TIMEOUT, Settings, check_timeout
from outspool.units import parse_duration, parse_size
from outspool.when import parse_when
from outspool.worker import Worker

F = TypeVar("F", bound=Callable[..., Any])
STREAMS = {"stdout": Stream.STDOUT, "stderr": Stream.STDERR, "all": None}
EXIT_USAGE = 2
EXIT_TIMEOUT = display.EXIT_TIMEOUT


def db_option(func: F) -> F:
    return click.option(
        "--db",
        metavar="DB",
        help="Database: a file path, sqlite:///path or postgresql://... "
        "[default: $OUTSPOOL_DB, else a file in your data directory]",
    )(func)


def label_option(text: str) -> Callable[[F], F]:
    return click.option("--label", "label_pairs", multiple=True, metavar="KEY=VALUE", help=text)


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


def _timeout(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    try:
        return check_timeout(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _parse_labels(
    ctx: click.Context, param: click.Parameter, pairs: tuple[str, ...]
) -> dict[str, str]:
    try:
        return labels.parse_all(pairs)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


class SizeType(click.ParamType[int]):
    """A byte size: ``1048576``, ``1MiB``, ``64MB``."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return parse_size(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeType()


def program_options(timeout_help: str) -> Callable[[F], F]:
    """What to run and how, shared by ``run`` and ``submit``: one option per field of
    :class:`~outspool.jobs.Job`, named like it (see :func:`job_of`)."""

    def apply(func: F) -> F:
        options = [
            click.option("--name", help="A name to find the execution by."),
            click.option(
                "--timeout",
                type=float,
                callback=_timeout,
                metavar="SECONDS",
                help=timeout_help + f" At most {MAX_TIMEOUT:.0f} (366 days).",
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
            click.option(
                "--label",
                "labels",
                multiple=True,
                metavar="KEY=VALUE",
                callback=_parse_labels,
                help="A label to find the execution by (repeatable).",
            ),
            click.option(
                "--max-output",
                type=SIZE,
                metavar="BYTES",
                help="Keep at most this much of each stream: its first and last halves "
                "(e.g. 1MiB; at most the max_output setting, which 0 leaves in force).",
            ),
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


def chosen_db(db: str | None) -> str | None:
    """The command's ``--db``, else the one given before the command (``outspool --db x ls``)."""
    if db is not None:
        return db
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    given: str | None = root.params.get("db") if root else None
    return given


@contextmanager
def spool(db: str | None, *, create: bool = True) -> Iterator[Outspool]:
    """The library on ``db``; ``create=False`` (read-only commands) never creates a store."""
    with Outspool(chosen_db(db), Settings.load(), create=create) as opened:
        yield opened


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="outspool")
@db_option
def cli(db: str | None) -> None:
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
        final = _wait_forwarding_signals(handle, sp)
    _leave(_exit_code(final))  # the store is closed: the output is stored and on disk


def _wait_forwarding_signals(handle: Running, sp: Outspool) -> Execution:
    """Wait for the run; SIGINT/SIGTERM/SIGHUP stop the program (twice: at once).

    While the database refuses writes (a full disk...), the program is stopped all
    the same, and outspool offers to leave: the next signal leaves at once without
    storing what is held.
    """
    received: list[int] = []
    offered: list[bool] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        reason = f"interrupted by {signal.Signals(signum).name}"
        handle.cancel(reason, force=len(received) > 1)
        if offered:
            click.echo(
                f"outspool: left without storing the rest of {handle.id}; "
                "`outspool recover` will mark it lost",
                err=True,
            )
            os._exit(128 + received[0])  # the writer cannot finish: nothing else to wait for
        trouble = sp.started_writer.trouble if sp.started_writer else None
        if trouble is not None:
            offered.append(True)
            click.echo(
                f"outspool: the database refuses writes ({trouble}); the program is being "
                "stopped and its output is held: interrupt again to leave without storing it",
                err=True,
            )

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


def _leave(code: int) -> NoReturn:
    """Exit now, without Python's teardown (freeing every module and object: a quarter of
    the CPU of `outspool run -- true`, docs/performance.md); only once nothing is left
    open but the standard streams, which are flushed here."""
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # nobody reads them any more (`outspool run ... | head`)
        pass
    os._exit(code)


def _exit_code(ex: Execution) -> int:
    code = display.exit_code(ex)
    return 1 if code is None else code


# --- logs --------------------------------------------------------------------------------


def when_option(name: str, text: str) -> Callable[[F], F]:
    return click.option(name, metavar="TIME", help=f"{text} (RFC 3339, or a duration: 10m, 2h).")


@cli.command()
@db_option
@click.argument("refs", metavar="ID|NAME...", nargs=-1)
@click.option("--stream", type=click.Choice(list(STREAMS)), default="all", show_default=True)
@click.option(
    "--tail", "-n", "tail_lines", type=click.IntRange(min=0), metavar="N", help="The last N lines."
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until it ends.")
@click.option("--timestamps", "-t", is_flag=True, help="Prefix each line with its time (UTC).")
@when_option("--since", "Only lines read at or after TIME")
@when_option("--until", "Only lines read before TIME")
@click.option("--json", "as_json", is_flag=True, help='One {"time","stream","text"} per line.')
@click.option("--raw", is_flag=True, help="Write the exact stored bytes (no UTF-8 decoding).")
@label_option("Follow every execution with this label, also those starting later.")
def logs(
    db: str | None,
    refs: tuple[str, ...],
    stream: str,
    tail_lines: int | None,
    follow: bool,
    timestamps: bool,
    since: str | None,
    until: str | None,
    as_json: bool,
    raw: bool,
    label_pairs: tuple[str, ...],
) -> None:
    """Print the output of executions by ID (a unique prefix is enough) or name.

    \b
    outspool logs build -t --since 10m
    outspool logs -f --label ci=nightly
    """
    now = time.time()
    view = LineView(
        STREAMS[stream],
        timestamps=timestamps,
        as_json=as_json,
        raw=raw,
        since=parse_when(since, now) if since else None,
        until=parse_when(until, now) if until else None,
    )
    wanted = labels.parse_all(label_pairs)
    if not refs and not wanted:
        raise click.UsageError("give an ID or name, or --label")
    with spool(db, create=False) as sp:
        if len(refs) > 1 or wanted:
            _many(sp, refs, wanted, follow, view)
        elif view.by_line:
            _lines_of(sp, sp.get(refs[0]).id, tail_lines, follow, view)
        else:
            _bytes_of(sp, sp.get(refs[0]).id, tail_lines, follow, view)
    view.close()


def _bytes_of(
    sp: Outspool, execution_id: str, tail_lines: int | None, follow: bool, view: LineView
) -> None:
    """The exact stored bytes (decoded unless --raw), as ``logs`` prints by default."""
    offset = 0
    if tail_lines is not None:
        last = sp.tail(execution_id, tail_lines, view.stream)
        if last.dropped:
            view.write(Gap(view.stream or Stream.STDOUT, last.offset, last.dropped))
        view.write(last.data)
        offset = last.next_offset
    elif not follow:
        for piece in sp.iter_pieces(execution_id, view.stream):
            view.write(piece)
    if follow:
        _follow(sp, execution_id, offset, view)


def _lines_of(
    sp: Outspool, execution_id: str, tail_lines: int | None, follow: bool, view: LineView
) -> None:
    """Lines with their times (-t, --json, --since, --until): reading starts at the chunk
    where --since begins and ends once no line before --until can come."""
    offset, mid_line = 0, False
    if tail_lines is not None:
        offset = sp.tail(execution_id, tail_lines, view.stream).offset
    if view.since is not None:
        start, inside = sp.since_start(execution_id, view.stream, view.since)
        if start > offset:
            offset, mid_line = start, inside
    splitter = LineSplitter(view.stream, offset, mid_line)
    follower = sp.follow(execution_id, view.stream, offset)
    while not follower.done:
        chunks = follower.poll_chunks() if follow else follower.read_chunks()
        if not chunks and not follow:
            break
        for chunk in chunks:
            view.lines(splitter.feed(chunk))
        if chunks and view.until is not None and splitter.ended_by(chunks[-1], view.until):
            break
    last = splitter.finish()
    view.lines([last] if last else [])


def _many(
    sp: Outspool,
    refs: tuple[str, ...],
    wanted: dict[str, str],
    follow: bool,
    view: LineView,
) -> None:
    """Several executions, each line prefixed with its name or short ID."""
    found = [sp.get(ref) for ref in refs]
    if wanted:
        found += sp.list(labels=wanted, limit=watch.DISCOVER_LIMIT)[::-1]
    unique = {ex.id: ex for ex in found}
    watcher = sp.watch(tuple(unique.values()), wanted if follow else None, view.stream)
    while not watcher.done:
        got = watcher.poll() if follow else watcher.poll(0)
        if not got and not follow:
            break
        for ex, line in got:
            view.lines([line], ex)


def _follow(sp: Outspool, execution_id: str, offset: int, view: LineView) -> None:
    """Print new output until the execution ends, or until the process capturing it
    is found lost (then it is marked ``lost`` and the follow ends; nothing is killed)."""
    for _, piece in sp.follow(execution_id, view.stream, offset):
        view.write(piece)


# --- show / ls ---------------------------------------------------------------------------


@cli.command()
@db_option
@click.argument("execution_id", metavar="ID|NAME")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def show(db: str | None, execution_id: str, as_json: bool) -> None:
    """Show the record of an execution: status, exit code, labels, sizes, progress."""
    with spool(db, create=False) as sp:
        ex = sp.get(execution_id)
    if as_json:
        click.echo(json.dumps(ex.to_json(), indent=2))
        return
    shown = {**ex.to_json(), "exit_code": display.shown_exit(ex) or None}  # as the shell says
    for key, value in shown.items():
        if value is not None and value not in ("", {}):
            click.echo(f"{key + ':':<18}{_shown(key, value)}")


def _shown(key: str, value: Any) -> str:
    if key == "command":
        return display.one_line(shlex.join(value))
    if key == "labels":
        return " ".join(f"{k}={v}" for k, v in value.items())
    if key == "code":
        return display.one_line(value)
    return str(value)


@cli.command(name="ls")
@db_option
@click.option("--json", "as_json", is_flag=True, help="A JSON array.")
@click.option("--status", type=click.Choice([s.value for s in Status]), help="Only this status.")
@click.option("--name", help="Only executions with this name.")
@label_option("Only executions with this label (repeatable: all must match).")
@when_option("--since", "Only executions created at or after TIME")
@click.option("--ago", is_flag=True, help="Show start times as ages (5m ago).")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1, max=10_000),
    default=20,
    show_default=True,
    help="Show at most this many (the newest).",
)
def ls(
    db: str | None,
    as_json: bool,
    status: str | None,
    name: str | None,
    label_pairs: tuple[str, ...],
    since: str | None,
    ago: bool,
    limit: int,
) -> None:
    """List executions, newest first. Exit codes as the shell shows them (143: signal 15)."""
    now = time.time()
    with spool(db, create=False) as sp:
        found = sp.list(
            Status(status) if status else None,
            limit,
            name=name,
            labels=labels.parse_all(label_pairs),
            since=parse_when(since, now) if since else None,
        )
    if as_json:
        click.echo(json.dumps([ex.to_json() for ex in found], indent=2))
        return
    colour = display.use_colour(sys.stdout)
    click.echo(
        f"{'ID':<16}  {'STATUS':<9}  {'EXIT':>4}  {'STARTED':<24}  {'OUTPUT':>10}  "
        f"{'PROGRESS':<16}  COMMAND"
    )
    for ex in found:
        click.echo(_row(ex, colour, now if ago else None))
    if any(ex.stdout_dropped or ex.stderr_dropped for ex in found):
        click.echo("* output limit: OUTPUT is what was kept; `show ID` says how much was dropped")


def _row(ex: Execution, colour: bool, now: float | None) -> str:
    when = ex.started_at or ex.created_at
    started = display.relative(when, now) if now is not None else display.local_time(when)
    dropped = ex.stdout_dropped + ex.stderr_dropped
    size = _human(ex.stdout_size + ex.stderr_size - dropped) + ("*" if dropped else " ")
    progress = display.one_line(ex.progress or "", 16)
    return (
        f"{ex.id:<16}  {display.status_text(ex.status, colour)}  {display.shown_exit(ex):>4}  "
        f"{started:<24}  {size:>10}  {progress:<16}  {display.command_line(ex, 60)}"
    )


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# --- grep / wait -------------------------------------------------------------------------


@cli.command()
@db_option
@click.argument("pattern")
@click.argument("refs", metavar="[ID|NAME]...", nargs=-1)
@label_option("Search executions with this label (repeatable: all must match).")
@when_option("--since", "Only lines read at or after TIME")
@when_option("--until", "Only lines read before TIME")
@click.option("--stream", type=click.Choice(list(STREAMS)), default="all", show_default=True)
@click.option("--ignore-case", "-i", is_flag=True, help="Match regardless of case.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Search at most this many executions (newest first) when none is named.",
)
def grep(
    db: str | None,
    pattern: str,
    refs: tuple[str, ...],
    label_pairs: tuple[str, ...],
    since: str | None,
    until: str | None,
    stream: str,
    ignore_case: bool,
    limit: int,
) -> None:
    """Print ID:LINE:TEXT for each line matching PATTERN (a Python regular expression).

    Searches the named executions, else every execution (with --label: those with the
    labels). Exits 0 if a line matched, 1 if none did, 2 on an error, like grep.

    \b
    outspool grep -i 'error|warning' build
    outspool grep --label ci=nightly --since 1h Traceback
    """
    now = time.time()
    rx = compile_pattern(pattern, ignore_case)
    low = parse_when(since, now) if since else None
    high = parse_when(until, now) if until else None
    matched = False
    with spool(db, create=False) as sp:
        for ex in _searched(sp, refs, labels.parse_all(label_pairs), low, limit):
            for m in sp.search(ex.id, rx, STREAMS[stream], Window.of(low, high)):
                click.echo(f"{m.execution_id}:{m.line}:{m.text}")
                matched = True
    sys.exit(0 if matched else 1)


def _searched(
    sp: Outspool, refs: tuple[str, ...], wanted: dict[str, str], since: float | None, limit: int
) -> list[Execution]:
    if refs:
        return [sp.get(ref) for ref in refs]
    found = sp.list(labels=wanted, limit=limit)
    return [ex for ex in found if since is None or not ex.finished_at or ex.finished_at >= since]


@cli.command(name="wait")
@db_option
@click.argument("refs", metavar="ID|NAME...", nargs=-1, required=True)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Give up after this long; exit 124.",
)
def wait_cmd(db: str | None, refs: tuple[str, ...], timeout: float | None) -> None:
    """Wait for executions to end. Exits like `run` for one (its exit code, 128+N for signal
    N, 124 on timeout); with several, 0 if all succeeded, else 1."""
    deadline = None if timeout is None else time.monotonic() + timeout
    final: list[Execution] = []
    with spool(db, create=False) as sp:
        targets = [sp.get(ref).id for ref in refs]
        for execution_id in targets:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                final.append(sp.wait(execution_id, left))
            except TimeoutError:
                status = sp.get(execution_id).status.value
                click.echo(
                    f"outspool: execution {execution_id} still {status} after {timeout:g} s",
                    err=True,
                )
                sys.exit(EXIT_TIMEOUT)
    if len(final) == 1:
        sys.exit(_exit_code(final[0]))
    sys.exit(0 if all(ex.status is Status.SUCCEEDED for ex in final) else 1)


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
    help="Run up to N programs at once [default: CPU count, 4x that when sandboxed].",
)
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    metavar="PORT",
    help="Serve Prometheus /metrics on 127.0.0.1:PORT (needs the web extra).",
)
def worker(db: str | None, concurrency: int | None, burst: bool, metrics_port: int | None) -> None:
    """Run queued executions until stopped (SIGTERM/SIGINT: drain; twice: stop now)."""
    w = Worker(chosen_db(db), Settings.load(), concurrency, burst)
    become_subreaper()
    if metrics_port is not None:
        _serve_metrics(w.spool, metrics_port)

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


def _serve_metrics(sp: Outspool, port: int) -> None:
    try:
        from outspool.metrics import serve_metrics
    except ImportError as exc:
        raise OutspoolError(f"metrics need: pip install 'outspool[web]' ({exc})") from None
    try:
        serve_metrics(sp, port)
    except OSError as exc:
        raise OutspoolError(f"cannot serve metrics on port {port}: {exc.strerror}") from None


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
    run_server(chosen_db(db), settings, host=host, port=port, token=token or settings.token)


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


# --- deleting ----------------------------------------------------------------------------


class DurationType(click.ParamType[float]):
    """A duration: ``30d``, ``12h``, ``10m``, ``0s`` (a bare number is seconds)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return parse_duration(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


@cli.command()
@db_option
@click.argument("execution_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Cancel a queued or running one first, then delete.")
def delete(db: str | None, execution_ids: tuple[str, ...], force: bool) -> None:
    """Delete executions and all their output; the space goes back to the filesystem.

    A queued or running execution is refused unless --force.
    """
    with spool(db) as sp:
        for execution_id in execution_ids:
            click.echo(f"{sp.delete(execution_id, force=force)} deleted")


@cli.command()
@db_option
@click.option(
    "--older-than", type=DurationType(), metavar="DURATION", help="Ended longer ago (30d, 12h)."
)
@click.option(
    "--keep-last",
    type=click.IntRange(min=0),
    metavar="N",
    help="Keep the N finished that ended last.",
)
@click.option(
    "--max-size",
    type=SIZE,
    metavar="BYTES",
    help="Oldest first, until the stored output fits (e.g. 10GiB).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in Status if s.finished]),
    help="Only executions that ended so (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def prune(
    db: str | None,
    older_than: float | None,
    keep_last: int | None,
    max_size: int | None,
    statuses: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """Delete finished executions matching every rule given; queued and running ones stay.

    \b
    outspool prune --older-than 30d
    outspool prune --keep-last 1000 --status succeeded --dry-run
    """
    if older_than is None and keep_last is None and max_size is None and not statuses:
        raise click.UsageError(
            "give at least one of --older-than, --keep-last, --max-size, --status"
        )
    with spool(db) as sp:
        done = sp.prune(
            older_than=older_than,
            keep_last=keep_last,
            max_size=max_size,
            statuses=[Status(s) for s in statuses],
            dry_run=dry_run,
        )
    if as_json:
        click.echo(json.dumps(done.to_json(), indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    plural = "" if done.count == 1 else "s"
    click.echo(f"{verb} {done.count} execution{plural} ({_human(done.bytes)} of output)")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: user mistakes get one line on stderr and exit code 2, never a traceback."""
    heap.tune()  # this process is ours: fewer arenas, read buffers reused instead of refaulted
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
