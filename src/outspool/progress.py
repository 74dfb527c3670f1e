"""Monitoring, pure: the progress field and the most recent lines.

:class:`Monitor` is fed every piece read from a program. It keeps the last
``recent_lines`` lines in memory and remembers the latest line matching a
progress pattern (latest wins; the writer stores it with its next commit, so a
chatty program never causes one database write per line). Lines are split on
``\\n``; within a line, text after the last ``\\r`` is what a terminal shows, so a
tqdm-style bar that redraws with ``\\r`` yields its current text.

To keep the capture loop cheap on bulk output only the last
``progress_scan_bytes`` of each read are examined, and of each line only its
last :data:`SCAN_LINE` bytes (the end a terminal shows). A pattern such as
``\\d+%`` tried at every digit of a run backtracks over the rest of it, so a
long line costs its length squared: cutting lines bounds the work per read to
``progress_scan_bytes * SCAN_LINE`` whatever the patterns, and the default
patterns start a number only where it starts, which makes them linear.

Before the regex engine sees a tail, the text the patterns need is looked for
with ``bytes.find`` (:mod:`outspool.patterns`: ``%`` for a percentage, ``step``,
``error``...): bulk output rarely holds it, and the engine's pass over 8 KiB
cost 0.3 ms a read, a tenth of a bulk capture's CPU at 1 MiB reads and most of
it at 64 KiB ones. A pattern without such text is always given to the engine.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from outspool.patterns import Required, haystacks, plan

_PERCENT = re.compile(rb"(?<![\d.])(\d+(?:\.\d+)?)\s*%")
#: Terminal escape sequences (CSI, OSC, DCS/APC/PM/SOS, two-character) and control characters.
_ESCAPES = re.compile(
    rb"\x1b(?:\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?"
    rb"|[ -/]*[0-~]?)|[\x00-\x08\x0b-\x1f\x7f]"
)
_LINE_BREAK = re.compile(rb"[\r\n]")
MAX_LINE = 4096  # longer lines are cut to this many bytes in memory (not in the store)
MAX_PROGRESS = 500  # characters of progress text kept
SCAN_LINE = 256  # bytes at the end of each line examined for progress


@dataclass(frozen=True, slots=True)
class Progress:
    """The latest progress line, and its percentage when it has one."""

    text: str
    percent: float | None


def compile_patterns(patterns: Sequence[str]) -> re.Pattern[bytes] | None:
    """One case-insensitive regular expression matching any of ``patterns``."""
    if not patterns:
        return None
    return re.compile(b"|".join(b"(?:" + p.encode() + b")" for p in patterns), re.IGNORECASE)


def parse_progress(segment: bytes) -> Progress:
    """The progress a matching line stands for: its text (terminal escapes and control
    characters removed), and a percentage if any."""
    segment = _ESCAPES.sub(b"", segment)
    text = segment.decode("utf-8", "replace").strip()[:MAX_PROGRESS]
    found = _PERCENT.search(segment)
    percent = min(100.0, float(found.group(1))) if found else None
    return Progress(text, percent)


class Monitor:
    """Recent lines and latest progress of one execution (one stream or both)."""

    def __init__(
        self, pattern: re.Pattern[bytes] | None, recent_lines: int = 100, scan_bytes: int = 8192
    ) -> None:
        self._pattern = pattern
        self._needed = None if pattern is None else _required(pattern)
        self._scan = scan_bytes
        self._recent: deque[bytes] = deque(maxlen=recent_lines)
        self._partial = b""
        self.progress: Progress | None = None
        self.progress_dirty = False

    def feed(self, data: bytes) -> None:
        """Account for bytes just read."""
        if not data:
            return
        self._feed_lines(data)
        if self._pattern is not None:
            self._feed_progress(data[-self._scan :])

    def recent(self) -> list[bytes]:
        """The most recent lines, oldest first; an unfinished last line included."""
        lines = list(self._recent)
        if self._partial:
            lines.append(self._partial)
        return lines[-(self._recent.maxlen or 1) :]

    def take_progress(self) -> Progress | None:
        """The progress to store with the next commit, if it changed since the last one."""
        if not self.progress_dirty:
            return None
        self.progress_dirty = False
        return self.progress

    def _feed_lines(self, data: bytes) -> None:
        ends = _last_newlines(data, self._recent.maxlen or 1)
        if not ends:
            self._partial = (self._partial + data[:MAX_LINE])[:MAX_LINE]
            return
        before = data.rfind(b"\n", 0, ends[0])
        if before < 0:
            first = (self._partial + data[: min(ends[0], MAX_LINE)])[:MAX_LINE]
        else:
            first = data[before + 1 : min(ends[0], before + 1 + MAX_LINE)]
        self._recent.append(first)
        for start, end in pairwise(ends):
            self._recent.append(data[start + 1 : min(end, start + 1 + MAX_LINE)])
        self._partial = data[ends[-1] + 1 : ends[-1] + 1 + MAX_LINE]

    def _feed_progress(self, tail: bytes) -> None:
        assert self._pattern is not None
        if self._needed and not _holds(tail, self._needed):
            return  # the text every match needs is absent: no match, engine not run
        segments = _LINE_BREAK.split(tail)
        if max(map(len, segments)) > SCAN_LINE:
            segments = [segment[-SCAN_LINE:] for segment in segments]
            tail = b"\n".join(segments)
        if self._pattern.search(tail) is None:
            return  # one pass over the tail: most reads of bulk output match nothing
        for segment in reversed(segments):
            if segment.strip() and self._pattern.search(segment):
                found = parse_progress(segment)
                if found.percent is None and self.progress is not None:
                    # a line without a percentage keeps the last known one
                    found = Progress(found.text, self.progress.percent)
                if found != self.progress:
                    self.progress = found
                    self.progress_dirty = True
                return


@functools.lru_cache(maxsize=64)
def _required(pattern: re.Pattern[bytes]) -> tuple[Required, ...]:
    """What a tail must hold for ``pattern`` to match in it (empty: nothing known).

    The parse tree is read as text (a bytes pattern's bytes as Latin-1) and needles come
    back as UTF-8, so only requirements spelled in ASCII are kept: for those both agree.
    Needles holding a line break are dropped too: the scan rejoins cut lines with ``\\n``,
    which must not make a match out of text that was not in the tail."""
    try:
        text = re.compile(pattern.pattern.decode("latin-1"), pattern.flags & ~re.LOCALE)
    except (re.error, ValueError):  # fine as bytes, not as text: leave it to the engine
        return ()
    return tuple(
        r
        for r in plan(text).required
        if all(n.isascii() and b"\n" not in n and b"\r" not in n for n in r.needles)
        and all(n.isascii() and b"\n" not in n and b"\r" not in n for n in r.ascii_needles)
    )


def _holds(tail: bytes, needed: tuple[Required, ...]) -> bool:
    """Whether ``tail`` holds one needle of every requirement (as ``search`` finds them)."""
    return all(any(n in hay for n in needles) for needles, hay in haystacks(needed, tail))


def _last_newlines(data: bytes, count: int) -> list[int]:
    """Positions of the last ``count`` newlines in ``data``, in order."""
    ends: list[int] = []
    pos = len(data)
    while len(ends) < count:
        nl = data.rfind(b"\n", 0, pos)
        if nl < 0:
            break
        ends.append(nl)
        pos = nl
    ends.reverse()
    return ends
