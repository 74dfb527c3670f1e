"""Searching stored output line by line (``outspool grep``, ``GET /api/search``).

The matcher streams: it decodes one chunk at a time, carries only the
unfinished last line over to the next chunk, and runs the regular expression
(Python syntax) over all the complete lines of a chunk at once, so its speed is
the regex engine's, not a Python loop's. A line matches when the pattern
matches within it (a match across a newline is checked again on its line
alone). Line numbers count lines of the searched stream as ``outspool logs``
prints it. With a time window, only lines read within it are reported; a chunk
wholly inside or outside the window is decided at once, and only a chunk that
straddles an edge is looked at line by line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from outspool.codec import decode
from outspool.errors import ConfigError
from outspool.follow import Cursor, iter_chunks
from outspool.linetimes import Timeline
from outspool.models import Chunk, Stream
from outspool.store.base import Store
from outspool.when import ms_from

MAX_PATTERN = 4096


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


def compile_pattern(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """The pattern, compiled; ConfigError with the reason when it is not valid."""
    if len(pattern) > MAX_PATTERN:
        raise ConfigError(f"a pattern is at most {MAX_PATTERN} characters")
    flags = re.MULTILINE | (re.IGNORECASE if ignore_case else 0)
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise ConfigError(f"bad pattern {pattern!r}: {exc}") from None


class Matcher:
    """Finds matching lines in the chunks of one execution, fed in order."""

    def __init__(
        self, execution_id: str, rx: re.Pattern[str], stream: Stream | None, window: Window
    ) -> None:
        self.execution_id = execution_id
        self._rx = rx
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
        then the lines between ``first`` and ``last``, decoded and searched without copies."""
        head = (self._carry + data[:first]).decode("utf-8", "replace")
        found = self._scan(head, self._lines)
        if last > first:
            body = str(memoryview(data)[first + 1 : last], "utf-8", "replace")
            found += self._scan(body, self._lines + 1)
        return found

    def finish(self) -> list[Match]:
        """The unfinished last line, once the execution has ended."""
        if not self._carry:
            return []
        if self._window and not self._window.holds(self._carry_ms):
            return []
        return self._scan(self._carry.decode("utf-8", "replace"), self._lines)

    def cut(self) -> list[Match]:
        """Bytes were not kept here (an output limit's gap): the unfinished line ends."""
        found = self.finish()
        if self._carry:
            self._lines += 1
            self._carry = b""
        return found

    def _remember(self, data: bytes, timeline: Timeline | None, at: int = 0) -> None:
        if data and not self._carry and timeline is not None:
            self._carry_ms = timeline.at(at)[0]
        self._carry += data

    def _scan(self, text: str, before: int) -> list[Match]:
        """Every line of ``text`` (lines joined by newlines, the first being line
        ``before + 1``) the pattern matches."""
        out: list[Match] = []
        rx, pos, counted, line = self._rx, 0, 0, before
        while pos <= len(text):
            m = rx.search(text, pos)
            if m is None:
                break
            start = text.rfind("\n", 0, m.start()) + 1
            end = text.find("\n", m.start())
            end = len(text) if end < 0 else end
            if m.end() > end and rx.search(text, start, end) is None:
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


def search(
    store: Store,
    execution_id: str,
    rx: re.Pattern[str],
    stream: Stream | None = None,
    window: Window | None = None,
) -> Iterator[Match]:
    """Matching lines of one execution's stored output, in order."""
    matcher = Matcher(execution_id, rx, stream, window or Window())
    cursor = Cursor(stream)
    for record in iter_chunks(store, execution_id):
        chunk = decode(record)
        if cursor.gaps(chunk):
            yield from matcher.cut()
        yield from matcher.feed(chunk)
    yield from matcher.finish()
