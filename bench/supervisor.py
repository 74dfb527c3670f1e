"""Baseline: supervisord (from PyPI) capturing the producer to log files.

One program, started at once, never restarted, logs never rotated; a listener
(``sv_listener.py``) stops supervisord as soon as the program has exited, so supervisord's
own exit marks the end of the capture.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CONF = """\
[supervisord]
nodaemon=true
logfile={work}/supervisord.log
logfile_maxbytes=0
loglevel=warn
pidfile={work}/supervisord.pid
childlogdir={work}

[program:producer]
command={command}
autostart=true
autorestart=false
startsecs=0
startretries=0
stdout_logfile={work}/sv.out
stdout_logfile_maxbytes=0
stdout_logfile_backups=0
stderr_logfile={work}/sv.err
stderr_logfile_maxbytes=0
stderr_logfile_backups=0

[eventlistener:stopper]
command={python} {listener} {work}/exited-at
events=PROCESS_STATE_EXITED,PROCESS_STATE_FATAL
autorestart=false
startsecs=0
"""


def supervisord_argv(work: Path, command: list[str]) -> list[str]:
    """Write the config into ``work`` and return the argv that runs supervisord on it."""
    conf = work / "supervisord.conf"
    conf.write_text(
        CONF.format(
            work=work,
            command=shlex.join(command).replace("%", "%%"),
            python=sys.executable,
            listener=HERE / "sv_listener.py",
        )
    )
    supervisord = Path(sys.executable).parent / "supervisord"
    return [str(supervisord), "-c", str(conf)]


def outputs(work: Path) -> tuple[Path, Path]:
    return work / "sv.out", work / "sv.err"


def exited_at(work: Path) -> float | None:
    """``time.time()`` at which supervisord reported the program's exit, if it did."""
    mark = work / "exited-at"
    return float(mark.read_text()) if mark.exists() else None
