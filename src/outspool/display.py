"""How outspool shows executions to a person: exit codes, one-line commands, times, colour.

Pure formatting, shared by the CLI and the worker's log lines. Exit codes follow
the shell (128+N for signal N, as ``outspool run`` exits); a command is shown on
one line whatever newlines its code holds; colour only on a terminal and never
with ``NO_COLOR`` set.
"""

from __future__ import annotations

import os
import shlex
from datetime import datetime
from typing import TextIO

from outspool.models import Execution, Outcome, Status
from outspool.when import age

EXIT_TIMEOUT = 124
_COLOURS = {
    Status.SUCCEEDED: "32",
    Status.FAILED: "31",
    Status.TIMED_OUT: "31",
    Status.LOST: "35",
    Status.CANCELLED: "33",
    Status.RUNNING: "36",
    Status.QUEUED: "2",
}


def exit_code(ex: Execution | Outcome) -> int | None:
    """The code ``outspool run`` exits with for this execution (None while it runs)."""
    if ex.status is Status.TIMED_OUT:
        return EXIT_TIMEOUT
    if ex.signal is not None:
        return 128 + ex.signal
    if ex.exit_code is not None:
        return ex.exit_code
    return 1 if ex.status.finished else None


def shown_exit(ex: Execution | Outcome) -> str:
    """The exit code column: ``0``, ``1``, ``143`` (signal 15), empty while running."""
    if ex.exit_code is None and ex.signal is None and ex.status is not Status.TIMED_OUT:
        return ""
    code = exit_code(ex)
    return "" if code is None else str(code)


def one_line(text: str, width: int | None = None) -> str:
    """``text`` with newlines and tabs shown as ``\\n`` and ``\\t``, cut to ``width``."""
    flat = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    flat = flat.replace("\t", "\\t")
    if width is not None and len(flat) > width:
        return flat[: max(0, width - 1)] + "…"
    return flat


def command_line(ex: Execution, width: int | None = None) -> str:
    """What ran, on one line: the name, else the language and code, else the argv."""
    if ex.name:
        return one_line(ex.name, width)
    if ex.language and ex.code is not None:
        return one_line(f"{ex.language}: {ex.code}", width)
    return one_line(shlex.join(ex.command), width)


def local_time(ts: float | None) -> str:
    """``2026-05-01 14:02:11 +0200``: local time with its zone."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def relative(ts: float | None, now: float) -> str:
    """``5m ago``."""
    return "" if ts is None else f"{age(now - ts)} ago"


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def status_text(status: Status, colour: bool, width: int = 9) -> str:
    text = f"{status.value:<{width}}"
    if not colour:
        return text
    return f"\x1b[{_COLOURS[status]}m{text}\x1b[0m"


_PREFIX_COLOURS = ("36", "33", "32", "35", "34", "91", "96", "93")


def prefix(label: str, index: int, colour: bool) -> str:
    """``name | `` before each line of one of several executions (``logs -f``)."""
    if not colour:
        return f"{label} | "
    return f"\x1b[{_PREFIX_COLOURS[index % len(_PREFIX_COLOURS)]}m{label} |\x1b[0m "
