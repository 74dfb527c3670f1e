"""Loading named SQL blocks from the ``sql/`` files beside this module."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def load(dialect: str) -> dict[str, str]:
    """``name -> SQL text`` for one dialect (``sqlite`` or ``postgres``)."""
    text = resources.files("outspool.store").joinpath("sql", f"{dialect}.sql").read_text()
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in {dialect}.sql")
        queries[name] = body.strip()
    return queries
