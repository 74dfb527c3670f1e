"""Labels: ``KEY=VALUE`` pairs attached to an execution to find it by (``--label``).

Keys are short words (letters, digits, ``_ . - /``); values are any text up to
1,024 characters without NUL. Both are checked before anything is stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from outspool.errors import ConfigError

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}")
MAX_VALUE = 1024
MAX_LABELS = 64


def parse(pair: str) -> tuple[str, str]:
    """``KEY=VALUE`` as a checked pair; ConfigError otherwise."""
    key, sep, value = pair.partition("=")
    if not sep:
        raise ConfigError(f"label {pair!r} is not KEY=VALUE")
    check(key, value)
    return key, value


def parse_all(pairs: Iterable[str]) -> dict[str, str]:
    """Several ``KEY=VALUE`` pairs (a repeated key: the last wins)."""
    return validate(dict(parse(p) for p in pairs))


def check(key: str, value: str) -> None:
    if not _KEY.fullmatch(key):
        raise ConfigError(
            f"label key {key!r} must be 1-128 letters, digits, '_', '.', '-' or '/', "
            "starting with a letter or digit"
        )
    if len(value) > MAX_VALUE or "\0" in value:
        raise ConfigError(f"label {key!r}: a value is at most {MAX_VALUE} characters, no NUL")


def validate(labels: Mapping[str, str]) -> dict[str, str]:
    """A checked copy of ``labels``."""
    if len(labels) > MAX_LABELS:
        raise ConfigError(f"at most {MAX_LABELS} labels per execution")
    for key, value in labels.items():
        check(key, value)
    return dict(labels)


def as_filter(labels: Mapping[str, str] | None) -> str | None:
    """The JSON array of ``[key, value]`` pairs the list queries take (None: no filter)."""
    if not labels:
        return None
    return json.dumps(sorted(labels.items()))
