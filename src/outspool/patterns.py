"""What a regular expression needs of a line, read from its parse tree (``grep``'s prefilter).

``outspool grep`` matches each line on its own, as ``rx.search(line)`` would. Two facts
about a pattern let it skip most of that work without changing a single result:

- *Required text*: byte strings a line must contain for the pattern to match in it (the
  literal runs of the pattern's required parts, one of several for an alternation).
  ``bytes.count`` finds them far faster than the regex engine; a chunk without them
  has no matching line, and otherwise only the lines holding them need the engine.
- *Line safety*: whether one search over many lines joined by newlines finds every line
  that matches on its own. It does unless the pattern looks outside the line it matches
  in: lookarounds, ``\\A``/``\\Z``, ``^``/``$`` without MULTILINE, and ``\\B`` (which holds
  at an empty line in the joined text, not in the empty string).

Case-insensitive text is compared on ASCII-lowercased bytes. Python's case folding lets
four non-ASCII letters match ASCII ones (KELVIN SIGN matches k, LATIN SMALL LETTER LONG S
matches s, and LATIN CAPITAL LETTER I WITH DOT ABOVE and LATIN SMALL LETTER DOTLESS I match
i), so for a haystack that is not all ASCII, required text is cut at those letters.
Anything this module does not recognise counts as "no required text" and "not line
safe", which is always correct, only slower.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

_sre: Any = importlib.import_module("re._parser")  # the stdlib's own parser (3.11+)

#: ASCII letters that a non-ASCII letter matches under IGNORECASE (tests/unit/test_patterns.py
#: checks this against every code point).
FOLDS_TO_NON_ASCII = frozenset("iksIKS")

_UNSAFE_AT = {"AT_BEGINNING_STRING", "AT_END_STRING", "AT_NON_BOUNDARY"}
_NEED_MULTILINE_AT = {"AT_BEGINNING", "AT_END"}
_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}


@dataclass(frozen=True, slots=True)
class Literal:
    text: str
    folded: bool  #: matched case-insensitively


@dataclass(frozen=True, slots=True)
class Required:
    """A line can match only if it holds one of ``needles`` (in the ASCII-lowercased line
    when ``folded``); ``ascii_needles`` serve a haystack that is all ASCII. An empty tuple
    means no usable text for that kind of haystack."""

    needles: tuple[bytes, ...]
    ascii_needles: tuple[bytes, ...]
    folded: bool


@dataclass(frozen=True, slots=True)
class Plan:
    required: tuple[Required, ...]
    line_safe: bool


def plan(rx: re.Pattern[str]) -> Plan:
    """The required text and line safety of a compiled pattern."""
    try:
        tree = _sre.parse(rx.pattern, rx.flags)
    except Exception:  # a pattern re.compile took but this parser did not: be plain
        return Plan((), False)
    flags = int(tree.state.flags)
    required = tuple(
        r for r in (_usable(alts) for alts in _sequence(list(tree), flags)) if r is not None
    )
    return Plan(required, _safe(list(tree), flags))


def haystacks(
    required: Sequence[Required], data: bytes
) -> Iterator[tuple[tuple[bytes, ...], bytes]]:
    """For each requirement with usable text for ``data``: the needles to look for and the
    haystack to look in (``data``, or its ASCII-lowercased copy, made once, for text
    matched regardless of case)."""
    ascii_only: bool | None = None
    lowered: bytes | None = None
    for req in required:
        needles, hay = req.needles, data
        if req.folded:
            ascii_only = data.isascii() if ascii_only is None else ascii_only
            needles = req.ascii_needles if ascii_only else needles
        if not needles:
            continue
        if req.folded:
            lowered = data.lower() if lowered is None else lowered
            hay = lowered
        yield needles, hay


def _name(op: Any) -> str:
    return str(op)


def _inner_flags(flags: int, av: Any) -> int:
    _group, add, remove, _items = av
    return (flags | int(add)) & ~int(remove)


def _sequence(items: list[Any], flags: int) -> list[tuple[Literal, ...]]:
    """Requirements of a sequence: each a tuple of literals, one of which must appear."""
    found: list[tuple[Literal, ...]] = []
    run: list[str] = []
    folded = False

    def flush() -> None:
        if run:
            found.append((Literal("".join(run), folded),))
            run.clear()

    for op, av in items:
        name = _name(op)
        if name == "LITERAL":
            fold = bool(flags & re.IGNORECASE)
            if run and fold != folded:
                flush()
            run.append(chr(av))
            folded = fold
            continue
        if name == "AT":  # zero-width: the text on either side is contiguous
            continue
        flush()
        if name == "SUBPATTERN":
            found += _sequence(list(av[3]), _inner_flags(flags, av))
        elif name == "ATOMIC_GROUP":
            found += _sequence(list(av), flags)
        elif name in _REPEATS and av[0] >= 1:
            found += _sequence(list(av[2]), flags)
        elif name == "BRANCH":
            found += _branch(av[1], flags)
    flush()
    return found


def _branch(alternatives: list[Any], flags: int) -> list[tuple[Literal, ...]]:
    """One of the alternatives' best literals must appear; nothing if one has none."""
    picks: list[Literal] = []
    for alternative in alternatives:
        options = [alts for alts in _sequence(list(alternative), flags) if len(alts) == 1]
        if not options:
            return []
        picks.append(max((alts[0] for alts in options), key=lambda lit: len(lit.text)))
    return [tuple(picks)]


def _usable(literals: tuple[Literal, ...]) -> Required | None:
    """The needles of one requirement, for both kinds of haystack (None: no use)."""
    folded = any(lit.folded for lit in literals)
    if folded and not all(lit.folded for lit in literals):
        return None  # mixed case rules in one alternation: leave it to the engine
    if not folded:
        needles = tuple(_longest(lit.text, _plain_ok) for lit in literals)
        ok = needles if all(needles) else ()
        return Required(ok, ok, False) if ok else None
    anywhere = tuple(_longest(lit.text, _fold_ok).lower() for lit in literals)
    in_ascii = tuple(_longest(lit.text, str.isascii).lower() for lit in literals)
    anywhere = anywhere if all(anywhere) else ()
    in_ascii = in_ascii if all(in_ascii) else ()
    return Required(anywhere, in_ascii, True) if in_ascii else None


def _plain_ok(c: str) -> bool:
    # U+FFFD also stands for undecodable bytes; a lone surrogate has no UTF-8 form
    return c != "\ufffd" and not 0xD800 <= ord(c) <= 0xDFFF


def _fold_ok(c: str) -> bool:
    return c.isascii() and c not in FOLDS_TO_NON_ASCII


def _longest(text: str, ok: Callable[[str], bool]) -> bytes:
    """The longest run of ``text`` whose characters are all ``ok``, as UTF-8."""
    best = current = ""
    for c in text:
        current = current + c if ok(c) else ""
        best = max(best, current, key=len)
    return best.encode()


def _safe(items: list[Any], flags: int) -> bool:
    """True when nothing in the pattern looks outside the line it matches in."""
    for op, av in items:
        name = _name(op)
        if _looks_outside(name, av, flags):
            return False
        if not all(_safe(inner, inner_flags) for inner, inner_flags in _nested(name, av, flags)):
            return False
    return True


def _looks_outside(name: str, av: Any, flags: int) -> bool:
    if name in ("ASSERT", "ASSERT_NOT"):
        return True
    if name != "AT":
        return False
    at = _name(av)
    return at in _UNSAFE_AT or (at in _NEED_MULTILINE_AT and not flags & re.MULTILINE)


def _nested(name: str, av: Any, flags: int) -> list[tuple[list[Any], int]]:
    """The sequences inside one item, each with the flags in force there."""
    if name == "SUBPATTERN":
        return [(list(av[3]), _inner_flags(flags, av))]
    if name == "ATOMIC_GROUP":
        return [(list(av), flags)]
    if name in _REPEATS:
        return [(list(av[2]), flags)]
    if name == "BRANCH":
        return [(list(alternative), flags) for alternative in av[1]]
    if name == "GROUPREF_EXISTS":
        return [(list(part), flags) for part in av[1:] if part is not None]
    return []
