"""`make demo`: run a sample program under outspool, then show what was stored.

Each step prints the command it runs, so you can paste it yourself afterwards.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DB = HERE.parent / ".demo" / "demo.db"
OUTSPOOL = [sys.executable, "-m", "outspool.cli"]


def step(title: str, *args: str, capture: bool = False) -> str:
    shown = " ".join(shlex.quote(a) for a in ("outspool", *args))
    print(f"\n\033[1m# {title}\033[0m\n$ {shown}", flush=True)
    done = subprocess.run([*OUTSPOOL, *args], capture_output=capture, text=True, check=False)
    if capture:
        return done.stdout
    return ""


def main() -> None:
    DB.parent.mkdir(exist_ok=True)
    db = str(DB.relative_to(Path.cwd())) if DB.is_relative_to(Path.cwd()) else str(DB)
    program = str((HERE / "sample_program.py").relative_to(HERE.parent))
    step(
        "Run a program: its output shows live and every byte is stored",
        "run",
        "--db",
        db,
        "--name",
        "demo",
        "--",
        sys.executable,
        program,
    )
    listing = json.loads(
        step("List executions", "ls", "--db", db, "--json", "--limit", "1", capture=True)
    )
    execution_id = listing[0]["id"]
    step("The list, as a table", "ls", "--db", db, "--limit", "5")
    step(
        "The stored record: status, sizes, and the progress parsed from the \\r bar",
        "show",
        "--db",
        db,
        execution_id,
    )
    step(
        "The last 3 lines of stderr, read from the newest chunk only",
        "logs",
        "--db",
        db,
        execution_id,
        "--stream",
        "stderr",
        "--tail",
        "3",
    )
    step("stdout and stderr together, in the order they arrived", "logs", "--db", db, execution_id)
    print(
        f"\nThe database is {db}. Try: outspool logs --db {db} {execution_id} --raw | od -c | head"
    )


if __name__ == "__main__":
    main()
