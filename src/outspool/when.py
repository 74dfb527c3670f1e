"""Times as people type and read them: RFC 3339 instants and durations like ``10m``.

Pure: the clock is passed in. ``--since 10m`` means ten minutes before now;
``--since 2026-05-01T12:00:00Z`` means that instant. A time without a zone is
refused rather than guessed.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from outspool.errors import ConfigError

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|s|m|h|d|w))+")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds in ``1h30m``, ``10m``, ``90s``, ``250ms``, ``2d``; ConfigError otherwise."""
    text = text.strip()
    if not _DURATION.fullmatch(text):
        raise ConfigError(f"{text!r} is not a duration (like 90s, 10m, 2h, 1d)")
    return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))


def parse_instant(text: str) -> float:
    """Epoch seconds of an RFC 3339 time (``2026-05-01T12:00:00Z``, ``...+02:00``)."""
    cleaned = text.strip()
    if cleaned[-1:] in ("z", "Z"):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ConfigError(f"{text!r} is not an RFC 3339 time or a duration") from None
    if moment.tzinfo is None:
        raise ConfigError(f"{text!r} has no time zone: add Z (UTC) or an offset like +02:00")
    return moment.timestamp()


def parse_when(text: str, now: float) -> float:
    """Epoch seconds of a duration ago (``10m``) or of an RFC 3339 time."""
    if _DURATION.fullmatch(text.strip()):
        return now - parse_duration(text)
    return parse_instant(text)


def ms_from(seconds: float) -> int:
    """The first whole millisecond at or after ``seconds`` (float error of a parsed time
    ignored), so a cut-off at a line's shown time includes that line."""
    return math.ceil(round(seconds * 1000, 3))


def rfc3339(ts: float) -> str:
    """``2026-05-01T12:00:00.123Z``: UTC, milliseconds."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def rfc3339_ms(ms: int) -> str:
    """Like :func:`rfc3339` for integer milliseconds since the epoch (exact, no float)."""
    seconds, frac = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:03d}Z"


def age(seconds: float) -> str:
    """A short relative age: ``5s``, ``3m``, ``2h``, ``4d``."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
