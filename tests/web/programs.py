"""Child programs the web tests run, and a gate to step them from the test."""

from __future__ import annotations

import sys
from pathlib import Path

#: Prints line i (with a percentage) and a stderr line, then waits for the file ``GATE.i``.
GATED = r"""
import os, sys, time
gate, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    print(f"line {i} {100 * (i + 1) // n}%", flush=True)
    print(f"err {i}", file=sys.stderr, flush=True)
    while not os.path.exists(f"{gate}.{i}"):
        time.sleep(0.005)
print("done", flush=True)
"""

#: Writes bytes that are not text: invalid UTF-8, NUL, \r redraws, a split character.
BINARY = r"""
import os
os.write(1, b"ok \xff\xfe\x00 bytes\r\n")
os.write(2, b"caf\xc3")
os.write(2, b"\xa9 stderr\n")
os.write(1, b"10%\r50%\r100%\n\x1b[31mred\x1b[0m <b>bold?</b>\n")
"""


class Gate:
    """Opens the steps of a :data:`GATED` program one by one."""

    def __init__(self, directory: Path, steps: int) -> None:
        self.base = directory / "gate"
        self.steps = steps

    def command(self) -> list[str]:
        return [sys.executable, "-c", GATED, str(self.base), str(self.steps)]

    def open(self, step: int) -> None:
        Path(f"{self.base}.{step}").touch()

    def open_all(self) -> None:
        for step in range(self.steps):
            self.open(step)
