"""outspool: capture every byte a program prints, watch it live, keep it in a database."""

from __future__ import annotations

__version__ = "0.1.0"

from outspool.client import Outspool, Running
from outspool.errors import (
    ConfigError,
    NotFoundError,
    OutspoolError,
    SchemaTooNewError,
    SpawnError,
    StoreError,
)
from outspool.follow import Follower, Range
from outspool.jobs import Job
from outspool.models import Chunk, Execution, Outcome, Status, Stream
from outspool.settings import Settings

__all__ = [
    "Chunk",
    "ConfigError",
    "Execution",
    "Follower",
    "Job",
    "NotFoundError",
    "Outcome",
    "Outspool",
    "OutspoolError",
    "Range",
    "Running",
    "SchemaTooNewError",
    "Settings",
    "SpawnError",
    "Status",
    "StoreError",
    "Stream",
    "__version__",
]
