"""Secret masking: every occurrence of a secret's value in a stream becomes ``[MASKED]``.

A :class:`Masker` sits in the capture path before anything is buffered, echoed
or scanned for progress, one per stream. It is streaming: a value split across
two reads is still found, because the end of a read that could be the start of
a secret is held back until the next read (or the end of the stream) says
which it is. Output that cannot start a secret is passed on at once, so a
program that prints no secrets sees no extra latency.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from outspool.errors import ConfigError

MASK = b"[MASKED]"
#: Shorter values would mask ordinary words; GitLab refuses them for the same reason.
MIN_SECRET_LENGTH = 8


def check_secret(name: str, value: str) -> None:
    """Refuse a secret that cannot be masked reliably."""
    if len(value.encode()) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"secret {name} is too short to be masked: values need at least "
            f"{MIN_SECRET_LENGTH} bytes"
        )


class Masker:
    """Replaces secret values in one stream of bytes, across read boundaries."""

    def __init__(self, values: Iterable[str | bytes]) -> None:
        raw = {v.encode() if isinstance(v, str) else v for v in values}
        self._values = sorted((v for v in raw if v), key=len, reverse=True)
        self._pattern = re.compile(b"|".join(re.escape(v) for v in self._values))
        self._longest = len(self._values[0]) if self._values else 0
        self._held = b""

    def __bool__(self) -> bool:
        return bool(self._values)

    def feed(self, data: bytes) -> bytes:
        """Bytes that can be passed on now; a possible start of a secret is kept back."""
        if not self._values:
            return data
        text = self._held + data if self._held else data
        hold = self._possible_start(text, 0)
        pieces: list[bytes] = []
        pos = 0
        for found in self._pattern.finditer(text):
            if found.start() >= hold:
                break
            pieces += (text[pos : found.start()], MASK)
            pos = found.end()
        if pos > hold:  # a complete secret ran into the held tail: hold only what follows it
            hold = self._possible_start(text, pos)
        pieces.append(text[pos:hold])
        self._held = text[hold:]
        return b"".join(pieces)

    def flush(self) -> bytes:
        """The end of the stream: whatever was held back is not a secret."""
        held, self._held = self._held, b""
        return held

    def _possible_start(self, text: bytes, after: int) -> int:
        """Where the earliest tail of ``text`` (from ``after`` on) that could begin a secret
        starts; ``len(text)`` when none could."""
        for pos in range(max(after, len(text) - self._longest + 1), len(text)):
            tail = text[pos:]
            if any(len(v) > len(tail) and v.startswith(tail) for v in self._values):
                return pos
        return len(text)
