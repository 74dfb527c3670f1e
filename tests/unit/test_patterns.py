"""grep's prefilter never changes a result: every pattern, every chunking, against a plain
per-line ``rx.search(line)`` reference; and what the pattern analysis reads from a pattern."""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from outspool.codec import Encoder, decode
from outspool.models import Chunk, Stream
from outspool.patterns import FOLDS_TO_NON_ASCII, plan
from outspool.search import Matcher, Window, compile_pattern

OUT = Stream.STDOUT

#: Self-contained pieces of patterns, chosen for the ways a line-at-a-time reading and a
#: whole-chunk one could disagree: anchors, lookarounds, newlines, case folding, U+FFFD.
FRAGMENTS = [
    "a", "ab", "ba", "k", "K", "s", "i", "\u212a", "\u017f", "\u0131", "\u0130", "é", "É",
    "\ufffd", ".", r"\d", r"\s", r"\S", r"\w", r"\W", "[^a]", "[ak]", r"\b", r"\B", "^", "$",
    r"\A", r"\Z", "(?<=a)", "(?<!b)", "(?=a)", "(?!b)", r"\n", "(?s:.)", "(?-m:^)", "(?-m:$)",
    "a*", "b+", "(?:ab|ba)", "(?:x|)", "(a|k)", "(?:a|b)+", "(?:ab){2}", "(?i:ab)", "(?i:k)",
    "(?>ab)", "a{0,2}", " ",
]  # fmt: skip
patterns = st.tuples(
    st.sampled_from(["", "(?i)", "(?a)", "(?ai)"]),
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=5),
).map(lambda p: p[0] + "".join(p[1]))
PIECES = [b"a", b"b", b"A", b"B", b"k", b"K", b"s", b"S", b"i", b"I", b" ", b"1", b"\n", b"\n\n"]
PIECES += [s.encode() for s in ("é", "É", "\u212a", "\u017f", "\u0131", "\u0130", "\ufffd")]
PIECES += [b"\xff", b"\xe2\x82"]  # not UTF-8: replaced on both sides
texts = st.lists(st.sampled_from(PIECES), max_size=60).map(b"".join)


def reference(rx: re.Pattern[str], data: bytes) -> list[tuple[int, str]]:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # no unfinished last line
    decoded = [line.decode("utf-8", "replace") for line in lines]
    return [(n, text) for n, text in enumerate(decoded, 1) if rx.search(text) is not None]


def chunked(data: bytes, cuts: list[int]) -> list[Chunk]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    out, offset = [], 0
    for index, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        record = Encoder().encode("ex", index, (offset, 0), [(OUT, data[lo:hi])], 0.0, stamps=[1])
        out.append(decode(record))
        offset += hi - lo
    return out


def grep(rx: re.Pattern[str], chunks: list[Chunk]) -> list[tuple[int, str]]:
    matcher = Matcher("ex", rx, None, Window())
    found = [hit for chunk in chunks for hit in matcher.feed(chunk)] + matcher.finish()
    return [(hit.line, hit.text) for hit in found]


@settings(max_examples=1000)
@given(patterns, texts, st.lists(st.integers(0, 200), max_size=4), st.booleans())
def test_grep_finds_exactly_the_lines_a_per_line_search_finds(
    pattern: str, data: bytes, cuts: list[int], ignore_case: bool
) -> None:
    rx = compile_pattern(pattern, ignore_case)
    assert grep(rx, chunked(data, cuts)) == reference(rx, data)


@given(patterns, st.integers(1, 40), st.integers(0, 5))
def test_dense_and_sparse_regions_agree(pattern: str, lines: int, every: int) -> None:
    """Many lines per chunk, the required text on every line or on few: each path once."""
    rx = compile_pattern(pattern)
    body = b"".join(
        (b"ab k\xe2\x82 \xc5\xbf\n" if every and n % every == 0 else b"xy \n") for n in range(lines)
    )
    assert grep(rx, chunked(body, [len(body) // 3])) == reference(rx, body)


@given(
    st.sampled_from([("k", "\u212a"), ("s", "\u017f"), ("i", "\u0130"), ("i", "\u0131")]),
    st.sampled_from(["{0}", "{0}n", "x{0}", "{0}{0}", "(?:{0}|zz)"]),
    st.booleans(),
)
def test_letters_that_fold_to_ascii_are_found(
    pair: tuple[str, str], shape: str, upper: bool
) -> None:
    """``(?i)k`` matches KELVIN SIGN, ``(?i)s`` matches LONG S: the needles allow for it."""
    letter, other = pair
    rx = compile_pattern(shape.format(letter.upper() if upper else letter), ignore_case=True)
    body = f"zz\n{shape.format(other)}\nx{other}n{other}{other}\n".encode()
    assert grep(rx, chunked(body, [])) == reference(rx, body)
    assert reference(rx, body)  # the case is one that matters


def test_the_ascii_letters_other_letters_fold_to() -> None:
    """Python's case folding matches these non-ASCII letters with ASCII ones, and no other."""
    ascii_class = re.compile(r"(?i)[\x00-\x7f]")
    folds = {
        c
        for x in range(0x80, 0x110000)
        if ascii_class.fullmatch(chr(x))
        for c in map(chr, range(0x80))
        if re.fullmatch(re.escape(c), chr(x), re.IGNORECASE)
    }
    assert folds == FOLDS_TO_NON_ASCII


def test_the_plan_of_a_few_patterns() -> None:
    def needles(pattern: str) -> list[tuple[bytes, ...]]:
        return [r.ascii_needles for r in plan(compile_pattern(pattern, "(?i)" in pattern)).required]

    assert needles(r"worker-[35] request (failed|refused)") == [
        (b"worker-",),
        (b" request ",),
        (b"failed", b"refused"),
    ]
    assert needles(r"(?i)ERROR:\s+(disk|net)") == [(b"error:",), (b"disk", b"net")]
    assert needles(r"a?b*c{0,3}|d") == []
    assert needles(r"(?:abc)+x") == [(b"abc",), (b"x",)]
    folded = plan(compile_pattern("sink", ignore_case=True)).required[0]
    assert folded.needles == (b"n",) and folded.ascii_needles == (b"sink",)
    assert plan(compile_pattern(r"\d+ ok")).line_safe
    assert plan(compile_pattern(r"^(a|b)$")).line_safe
    for unsafe in (r"\Aa", r"a\Z", r"(?<=x)a", r"a(?!b)", r"\Ba", r"(?-m:^)a"):
        assert not plan(compile_pattern(unsafe)).line_safe
