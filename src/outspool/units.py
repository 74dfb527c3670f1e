"""Sizes and durations as people type them (``64MiB``, ``30d``), and byte counts as they read.

Sizes accept a plain integer or one of the suffixes ``KiB``, ``MiB``, ``GiB``
(powers of 1024) and ``KB``, ``MB``, ``GB`` (powers of 1000), case-insensitive,
with an optional space: ``1MiB`` is 1,048,576 and ``1MB`` is 1,000,000.
Durations are read as ``--since`` reads them (``0s``, ``90m``, ``12h``, ``30d``,
``1h30m``); a bare number is seconds.
"""

from __future__ import annotations

import re

from outspool import when
from outspool.errors import ConfigError

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
}
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_BARE = re.compile(r"\s*\d+(?:\.\d+)?\s*")


#: The largest size or count accepted (SQLite and PostgreSQL integers are 64-bit).
MAX_SIZE = 1 << 62
#: The longest duration accepted, in seconds (about a century).
MAX_DURATION = 36600 * 86400.0


def parse_size(text: str | int) -> int:
    """Bytes in ``text``; ConfigError (one line) when it is not a size."""
    if isinstance(text, int) and not isinstance(text, bool):
        return _bounded_size(text, text)
    found = _NUMBER.fullmatch(str(text))
    unit = _SIZE_UNITS.get(found.group(2).lower()) if found else None
    if found is None or unit is None:
        raise ConfigError(
            f"not a size: {text!r} (give bytes, or a number with KiB, MiB, GiB, KB, MB or GB)"
        )
    if unit == 1 and "." in found.group(1):
        raise ConfigError(f"not a size: {text!r} (a number of bytes is a whole number)")
    return _bounded_size(text, float(found.group(1)) * unit)


def _bounded_size(text: object, value: float) -> int:
    if not 0 <= value <= MAX_SIZE:  # nan fails both
        raise ConfigError(f"a size must be 0 to 2^62 bytes, not {text!r}")
    return int(value)


def parse_duration(text: str | float) -> float:
    """Seconds in ``text``: a bare number, or a duration as :func:`outspool.when.parse_duration`
    reads it (``30d``, ``12h``, ``10m``, ``0s``); ConfigError when it is not one."""
    if isinstance(text, bool):
        raise ConfigError(f"not a duration: {text!r}")
    if isinstance(text, int | float) or _BARE.fullmatch(text):
        value = float(text)
    else:
        value = when.parse_duration(text)
    if not 0 <= value <= MAX_DURATION:  # nan fails both
        raise ConfigError(f"a duration must be 0 to 36600 days, not {text!r}")
    return value


def count(n: int) -> str:
    """A byte count with thousands separators, as the dropped-bytes marker shows it."""
    return f"{n:,}"
