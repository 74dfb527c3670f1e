"""Monitoring: recent lines and the progress field, latest wins."""

from __future__ import annotations

import re
from typing import cast

import pytest

from outspool.progress import (
    MAX_LINE,
    SCAN_LINE,
    Monitor,
    Progress,
    compile_patterns,
    parse_progress,
)
from outspool.settings import DEFAULT_PROGRESS_PATTERNS

DEFAULT = compile_patterns(DEFAULT_PROGRESS_PATTERNS)


def test_recent_lines_keeps_the_last_n_in_order() -> None:
    mon = Monitor(DEFAULT, recent_lines=3)
    mon.feed(b"".join(b"line %d\n" % i for i in range(10)))
    assert mon.recent() == [b"line 7", b"line 8", b"line 9"]


def test_recent_lines_joins_lines_split_across_reads() -> None:
    mon = Monitor(None, recent_lines=5)
    for piece in (b"hel", b"lo\nwor", b"ld", b"\n", b"tail"):
        mon.feed(piece)
    assert mon.recent() == [b"hello", b"world", b"tail"]


def test_recent_lines_counts_the_unfinished_line() -> None:
    mon = Monitor(None, recent_lines=2)
    mon.feed(b"a\nb\nc\npartial")
    assert mon.recent() == [b"c", b"partial"]


def test_recent_lines_cuts_very_long_lines_in_memory() -> None:
    mon = Monitor(None, recent_lines=2)
    for _ in range(10):
        mon.feed(b"x" * MAX_LINE)
    assert [len(line) for line in mon.recent()] == [MAX_LINE]
    mon.feed(b"\nshort\n")
    assert mon.recent() == [b"x" * MAX_LINE, b"short"]


def test_tqdm_bar_redrawn_with_carriage_return_gives_its_current_text() -> None:
    mon = Monitor(DEFAULT)
    mon.feed(b"\r  0%|          | 0/10")
    mon.feed(b"\r 40%|####      | 4/10\r 70%|#######   | 7/10")
    assert mon.progress == Progress("70%|#######   | 7/10", 70.0)


def test_latest_match_wins_within_one_read() -> None:
    mon = Monitor(DEFAULT)
    mon.feed(b"step 1\nstep 2\nplain\nstep 3 of 9\nnothing here\n")
    assert mon.progress is not None
    assert mon.progress.text == "step 3 of 9"
    assert mon.progress.percent is None


def test_progress_coalesces_and_is_taken_once() -> None:
    mon = Monitor(DEFAULT)
    for i in range(1, 50):
        mon.feed(b"%d%%\n" % i)
    assert mon.take_progress() == Progress("49%", 49.0)
    assert mon.take_progress() is None  # nothing new: no write
    mon.feed(b"no match\n")
    assert mon.take_progress() is None
    mon.feed(b"WARNING: disk\n")  # case-insensitive
    taken = mon.take_progress()
    assert taken is not None
    assert taken.text == "WARNING: disk"


def test_same_progress_again_is_not_dirty() -> None:
    mon = Monitor(DEFAULT)
    mon.feed(b"50%\n")
    assert mon.take_progress() is not None
    mon.feed(b"50%\n")
    assert mon.take_progress() is None


@pytest.mark.parametrize(
    ("line", "percent"),
    [
        (b"12%", 12.0),
        (b"done 12.5 %", 12.5),
        (b"150% of budget", 100.0),
        (b"error: nope", None),
        (b"\xff\xfe 3%", 3.0),
    ],
)
def test_parse_progress_percent(line: bytes, percent: float | None) -> None:
    found = parse_progress(line)
    assert found.percent == percent
    assert found.text == line.decode("utf-8", "replace").strip()


def test_no_patterns_means_no_progress() -> None:
    assert compile_patterns([]) is None
    mon = Monitor(None)
    mon.feed(b"50%\n")
    assert mon.progress is None
    assert mon.take_progress() is None


def test_custom_patterns() -> None:
    mon = Monitor(compile_patterns([r"epoch \d+"]))
    mon.feed(b"50%\nEpoch 3/10\nloss 0.1\n")
    assert mon.take_progress() == Progress("Epoch 3/10", None)


def test_only_the_tail_of_a_read_is_scanned() -> None:
    mon = Monitor(DEFAULT, scan_bytes=256)
    mon.feed(b"99%\n" + b"." * 1000)
    assert mon.progress is None
    mon.feed(b"." * 1000 + b"\n42%\n")
    assert mon.progress == Progress("42%", 42.0)


def test_progress_text_has_no_terminal_escapes() -> None:
    line = b"\x1b[2K\x1b[1;32mstep 3\x1b[0m of 4 \x1b]0;title\x07\x1b(B75%\x07"
    assert parse_progress(line) == Progress("step 3 of 4 75%", 75.0)


class _Recording:
    """A progress pattern that records the longest line it was asked to search."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self._pattern = pattern
        self.pattern, self.flags = pattern.pattern, pattern.flags  # read by the prefilter
        self.longest_line = 0
        self.searched = 0

    def search(self, text: bytes) -> re.Match[bytes] | None:
        self.searched += len(text)
        longest = max(len(line) for line in re.split(rb"[\r\n]", text))
        self.longest_line = max(self.longest_line, longest)
        return self._pattern.search(text)


@pytest.mark.parametrize(
    "piece", [b"7" * 100_000 + b"%", (b"7" * 1000 + b"%\n") * 100, b"x" * 8191 + b"%"]
)
def test_work_per_read_is_bounded_whatever_the_output(piece: bytes) -> None:
    # a pattern like \d+% tried at every digit of a long run backtracks over the rest of it:
    # the cost of searching a line grows with its length squared, so no line longer than
    # SCAN_LINE is ever searched, and a read's search covers at most twice the scanned tail
    assert DEFAULT is not None
    recording = _Recording(DEFAULT)
    mon = Monitor(cast("re.Pattern[bytes]", recording), scan_bytes=8192)
    for _ in range(3):
        mon.feed(piece)
    assert recording.longest_line <= SCAN_LINE
    assert recording.searched <= 3 * 2 * 8192


def test_the_default_percent_pattern_starts_numbers_where_they_start() -> None:
    # linear over a run of digits, and it matches exactly what \d+% matched
    assert DEFAULT is not None
    for text in (b"12%", b"at 99 %", b"x1234%", b"12.5%", b"7" * 5000 + b"%"):
        assert (DEFAULT.search(text) is None) == (re.search(rb"\d+%", text) is None)
    assert re.fullmatch(DEFAULT_PROGRESS_PATTERNS[0], "1234%")


def test_progress_at_the_end_of_a_long_line_is_found() -> None:
    mon = Monitor(DEFAULT)
    mon.feed(b"7" * 100_000 + b" 42%\n")
    assert mon.progress is not None
    assert mon.progress.percent == 42.0
    assert mon.progress.text.endswith("7 42%")


def test_a_tail_without_the_text_every_match_needs_skips_the_engine() -> None:
    assert DEFAULT is not None
    recording = _Recording(DEFAULT)
    mon = Monitor(cast("re.Pattern[bytes]", recording))
    bulk = b"".join(b"%063x\n" % (i * 0x9E3779B97F4A7C15) for i in range(20_000))
    mon.feed(bulk)
    assert recording.searched == 0
    assert mon.progress is None
    mon.feed(bulk + b"STEP 7 of 9\n")  # needs "step ", found case-insensitively
    assert recording.searched > 0
    assert mon.progress == Progress("STEP 7 of 9", None)


@pytest.mark.parametrize(
    ("patterns", "line"),
    [
        (DEFAULT_PROGRESS_PATTERNS, b"ERROR: disk"),
        (DEFAULT_PROGRESS_PATTERNS, b"Warning"),
        (DEFAULT_PROGRESS_PATTERNS, b"at 12%"),
        (DEFAULT_PROGRESS_PATTERNS, "\u00e9t\u00e9 Complete".encode()),
        (["café \\d+"], "CAFé 12".encode()),
        (["[0-9]+ items"], b"12 ITEMS"),
        (["\\d+/\\d+"], b"3/10"),
        (["done\\s*$"], b"done   "),
        (["kiss"], b"KISS"),
    ],
)
def test_the_prefilter_never_hides_a_match(patterns: list[str], line: bytes) -> None:
    pattern = compile_patterns(patterns)
    assert pattern is not None and pattern.search(line) is not None
    for text in (line, b"x" * 5000 + b"\n" + line, line + b"\r", b"\x9e\xff\n" + line):
        mon = Monitor(pattern)
        mon.feed(text)
        assert mon.progress is not None, text
