"""Every exception outspool raises on purpose lives here.

The CLI and the web layer turn an :class:`OutspoolError` into one clear line
(or a 4xx JSON body); anything else is a bug.
"""

from __future__ import annotations


class OutspoolError(Exception):
    """Base class: a problem a user can act on, with a one-line message."""


class ConfigError(OutspoolError):
    """A setting (environment variable or argument) has an invalid value."""


class StoreError(OutspoolError):
    """The database cannot be opened, read or written."""


class DamagedError(StoreError):
    """Stored output failed its checksum or does not decode: reported, never returned."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer outspool than this one."""


class NotFoundError(OutspoolError):
    """No execution has the given ID."""


class AmbiguousError(NotFoundError):
    """An ID prefix matches several executions."""


def ambiguous(prefix: str, ids: list[str]) -> AmbiguousError:
    """The one line for a prefix of several IDs, listing a few of them."""
    shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    return AmbiguousError(f"{prefix!r} matches several executions ({shown}): give more of the ID")


class SpawnError(OutspoolError):
    """The program could not be started (not found, not executable, bad cwd)."""


class InvalidStateError(OutspoolError):
    """The execution is not in a state that allows the operation."""
