"""Searching stored output line by line (``outspool grep``, ``GET /api/search``).

A line matches when the regular expression (Python syntax) matches in it, as
``rx.search(line)`` would, the line decoded as UTF-8 with replacement and without
its newline. Line numbers count lines of the searched stream as ``outspool logs``
prints it.

The matcher streams: it decodes one chunk at a time and carries only the
unfinished last line over to the next chunk. The complete lines of a chunk are
first checked for the text the pattern requires (:mod:`outspool.patterns`) with
``bytes.count``: a chunk without it is done at once, and when it is rare only the
lines holding it go to the regex engine. Otherwise one search runs over all the
lines at once, so the speed is the engine's, not a Python loop's; a pattern that
could match differently there (lookarounds, ``\\A``, ...) is searched line by
line. With a time window, only lines read within it are reported; a chunk wholly
inside or outside the window is decided at once, and only a chunk that straddles
an edge is looked at line by line.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from outspool.codec import decode
from outspool.errors import ConfigError
from outspool.follow import Cursor, iter_chunks
from outspool.linetimes import Timeline, base_ms
from outspool.models import Chunk, Stream
from outspool.patterns import Plan, haystacks, plan
from outspool.store.base import Store
from outspool.when import ms_from

MAX_PATTERN = 4096
#: When the rarest required text is on more than one line in DENSE, one search over all
#: the lines (for a line-safe pattern) beats searching those lines one by one.
DENSE = 4


@dataclass(frozen=True, slots=True)
class Match:
    """A matching line."""

    execution_id: str
    line: int  #: 1 for the first line
    text: str  #: decoded as UTF-8 with replacement, without its newline


@dataclass(frozen=True, slots=True)
class Window:
    """Lines read at or after ``since`` and before ``until``, in ms (None: open)."""

    since: int | None = None
    until: int | None = None

    @classmethod
    def of(cls, since: float | None, until: float | None) -> Window:
        return cls(
            None if since is None else ms_from(since), None if until is None else ms_from(until)
        )

    def holds(self, ms: int) -> bool:
        return (self.since is None or ms >= self.since) and (self.until is None or ms < self.until)

    def verdict(self, first: int, last: int) -> bool | None:
        """True: every time in [first, last] is inside; False: none is; None: some are."""
        if self.holds(first) and self.holds(last):
            return True
        if (self.since is not None and last < self.since) or (
            self.until is not None and first >= self.until
        ):
            return False
        return None


_QUIET = threading.Lock()


def compile_pattern(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """The pattern, compiled; ConfigError with the reason when it is not valid."""
    if len(pattern) > MAX_PATTERN:
        raise ConfigError(f"a pattern is at most {MAX_PATTERN} characters")
    flags = re.MULTILINE | (re.IGNORECASE if ignore_case else 0)
    try:
        # "possible nested set" ([[): valid, only flagged. catch_warnings saves and restores
        # the process's one list of filters: two threads in it at once would restore each
        # other's and leave FutureWarnings ignored for good, so one thread at a time.
        with _QUIET, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile(pattern, flags)
    except re.error as exc:
        raise ConfigError(f"bad pattern {pattern!r}: {exc}") from None


@lru_cache(maxsize=64)
def _plan(rx: re.Pattern[str]) -> Plan:
    return plan(rx)


class Matcher:
    """Finds matching lines in the chunks of one execution, fed in order."""

    def __init__(
        self, execution_id: str, rx: re.Pattern[str], stream: Stream | None, window: Window
    ) -> None:
        self.execution_id = execution_id
        self._rx = rx
        self._plan: Plan = _plan(rx)
        self._stream = stream
        self._window = window if window != Window() else None
        self._carry = b""
        self._carry_ms = 0
        self._lines = 0  # complete lines before the carry

    def feed(self, chunk: Chunk) -> list[Match]:
        data = chunk.data(self._stream)
        timeline = Timeline(chunk, self._stream) if self._window and data else None
        first = data.find(b"\n")
        if first < 0:
            self._remember(data, timeline)
            return []
        last = data.rfind(b"\n")
        found = self._matches(data, first, last, timeline)
        self._lines += data.count(b"\n", first, last) + 1
        self._carry = b""
        self._remember(data[last + 1 :], timeline, last + 1)
        return found

    def _matches(
        self, data: bytes, first: int, last: int, timeline: Timeline | None
    ) -> list[Match]:
        if self._window is None or timeline is None:
            return self._complete_lines(data, first, last)
        start_ms = self._carry_ms if self._carry else timeline.at(0)[0]
        verdict = self._window.verdict(start_ms, timeline.last_ms)
        if verdict is None:
            return self._line_by_line(self._carry + data[:last], timeline)
        return self._complete_lines(data, first, last) if verdict else []

    def _complete_lines(self, data: bytes, first: int, last: int) -> list[Match]:
        """Matches among the lines ``data`` completes: the carried line ending at ``first``,
        then the lines between ``first`` and ``last``, searched in place."""
        found = self._region(self._carry + data[:first], 0, None, self._lines + 1)
        if last > first:
            found += self._region(data, first + 1, last, self._lines + 2)
        return found

    def finish(self) -> list[Match]:
        """The unfinished last line, once the execution has ended."""
        if not self._carry:
            return []
        if self._window and not self._window.holds(self._carry_ms):
            return []
        return self._region(self._carry, 0, None, self._lines + 1)

    def cut(self) -> list[Match]:
        """Bytes were not kept here (an output limit's gap): the unfinished line ends."""
        found = self.finish()
        if self._carry:
            self._lines += 1
            self._carry = b""
        return found

    def past(self, chunk: Chunk) -> bool:
        """True when, after ``chunk``, no line read before the window's end can come: it
        was first read at or after the end (later chunks later still) and the carried
        line, if any, began there too."""
        until = self._window.until if self._window else None
        if until is None or base_ms(chunk) < until:
            return False
        return not self._carry or self._carry_ms >= until

    def _remember(self, data: bytes, timeline: Timeline | None, at: int = 0) -> None:
        if data and not self._carry and timeline is not None:
            self._carry_ms = timeline.at(at)[0]
        self._carry += data

    def _region(self, data: bytes, lo: int, hi: int | None, number: int) -> list[Match]:
        """The matching lines of ``data[lo:hi]`` (whole lines joined by newlines, the first
        being line ``number``): none when it lacks the text the pattern requires, else only
        the lines holding the rarest of it are searched, unless they are most lines and one
        search over them all is exact (:mod:`outspool.patterns`)."""
        hi = len(data) if hi is None else hi
        rarest = self._rarest(data, lo, hi)
        if rarest is not None:
            hits, needles, hay = rarest
            if not hits:
                return []
            if not self._plan.line_safe or hits * DENSE <= data.count(b"\n", lo, hi) + 1:
                return self._candidates(data, hay, needles, (lo, hi), number)
        if self._plan.line_safe:
            return self._scan(str(memoryview(data)[lo:hi], "utf-8", "replace"), number - 1)
        return self._each_line(data[lo:hi], number)

    def _rarest(self, data: bytes, lo: int, hi: int) -> tuple[int, tuple[bytes, ...], bytes] | None:
        """``(hits, needles, haystack)`` of the required text found least often in
        ``data[lo:hi]`` (0 hits: no line can match), or None when there is none to look
        for. The haystack is ``data`` or, for text matched regardless of case, its
        ASCII-lowercased copy."""
        best: tuple[int, tuple[bytes, ...], bytes] | None = None
        for needles, hay in haystacks(self._plan.required, data):
            hits = sum(hay.count(needle, lo, hi) for needle in needles)
            if best is None or hits < best[0]:
                best = (hits, needles, hay)
            if not hits:
                break
        return best

    def _candidates(
        self,
        data: bytes,
        hay: bytes,
        needles: tuple[bytes, ...],
        bounds: tuple[int, int],
        number: int,
    ) -> list[Match]:
        """Matches among the lines of ``data`` within ``bounds`` that hold one of
        ``needles`` in ``hay`` (``data`` or its lowercased copy), each searched alone."""
        out: list[Match] = []
        lo, hi = bounds
        ahead = [hay.find(needle, lo, hi) for needle in needles]
        counted, line, pos = lo, number, _earliest(ahead)
        while pos >= 0:
            start = max(lo, hay.rfind(b"\n", lo, pos) + 1)
            end = hay.find(b"\n", pos, hi)
            end = hi if end < 0 else end
            text = data[start:end].decode("utf-8", "replace")
            if self._rx.search(text) is not None:
                line += hay.count(b"\n", counted, start)
                counted = start
                out.append(Match(self.execution_id, line, text))
            for i, needle in enumerate(needles):
                if 0 <= ahead[i] <= end:
                    ahead[i] = hay.find(needle, end + 1, hi)
            pos = _earliest(ahead)
        return out

    def _each_line(self, region: bytes, number: int) -> list[Match]:
        """Every line searched on its own: for a pattern neither prefilter nor one joined
        search can serve exactly."""
        out: list[Match] = []
        for line, raw in enumerate(region.split(b"\n"), number):
            text = raw.decode("utf-8", "replace")
            if self._rx.search(text) is not None:
                out.append(Match(self.execution_id, line, text))
        return out

    def _scan(self, text: str, before: int) -> list[Match]:
        """Every line of ``text`` (lines joined by newlines, the first being line
        ``before + 1``) the pattern matches, in one search over all of them: only for a
        line-safe pattern, whose matches within a line are that line's own."""
        out: list[Match] = []
        rx, pos, counted, line = self._rx, 0, 0, before
        while pos <= len(text):
            m = rx.search(text, pos)
            if m is None:
                break
            start = text.rfind("\n", 0, m.start()) + 1
            end = text.find("\n", m.start())
            end = len(text) if end < 0 else end
            if m.end() > end and rx.search(text[start:end]) is None:
                pos = m.start() + 1  # matched across lines only: look further
                continue
            line += text.count("\n", counted, start)
            counted = start
            out.append(Match(self.execution_id, line + 1, text[start:end]))
            pos = end + 1
        return out

    def _line_by_line(self, region: bytes, timeline: Timeline) -> list[Match]:
        """The slow path, for a chunk straddling an edge of the window: each line's time."""
        out: list[Match] = []
        start, carried = 0, len(self._carry)
        for number, raw in enumerate(region.split(b"\n"), self._lines + 1):
            ms = self._carry_ms if start < carried else timeline.at(start - carried)[0]
            start += len(raw) + 1
            if self._window is not None and not self._window.holds(ms):
                continue
            text = raw.decode("utf-8", "replace")
            if self._rx.search(text) is not None:
                out.append(Match(self.execution_id, number, text))
        return out


def _earliest(positions: list[int]) -> int:
    found = [p for p in positions if p >= 0]
    return min(found) if found else -1


def search(
    store: Store,
    execution_id: str,
    rx: re.Pattern[str],
    stream: Stream | None = None,
    window: Window | None = None,
) -> Iterator[Match]:
    """Matching lines of one execution's stored output, in order; with an end to the
    window, reading stops once no line before it can come."""
    matcher = Matcher(execution_id, rx, stream, window or Window())
    cursor = Cursor(stream)
    for record in iter_chunks(store, execution_id):
        chunk = decode(record)
        if cursor.gaps(chunk):
            yield from matcher.cut()
        yield from matcher.feed(chunk)
        if matcher.past(chunk):
            break
    yield from matcher.finish()
