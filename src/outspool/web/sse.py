"""The event stream of a followed execution: what a follow finds, and its server-sent events.

A follow yields *steps*: lists of the items found at once (after one wake-up or read),
each a :class:`~outspool.pieces.Piece` of output (or of a gap), the record when it
changed, a :class:`FeedError`, or ``None`` for a keepalive. :class:`Events` turns a step
into the bytes of its events, in one piece, remembering which record it showed last (a
record is a ``status`` event when its status changed, a ``progress`` event when only its
progress did). Pure: no I/O.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from outspool.follow import Follower, Gap
from outspool.models import Execution, Stream
from outspool.pieces import Piece

EVENT_PIECE = 64 << 10  # output events carry at most this many bytes
RETRY = b"retry: 1000\n\n"  # the first bytes of every stream: reconnect after a second
KEEPALIVE_EVENT = b": keepalive\n\n"


@dataclass(frozen=True, slots=True)
class FeedError:
    """The store failed while following; the follower ends after reporting it."""

    message: str


Item = Piece | Execution | FeedError | None


def step_of(
    found: list[tuple[Stream, bytes | Gap]], start: int, follower: Follower, shown: Execution
) -> tuple[list[Item], Execution]:
    """The items of what ``follower`` found (its pieces from merged offset ``start``), with
    its record after them when that changed from ``shown`` (always once it is done); and
    the record shown after them."""
    step: list[Item] = []
    for stream, data in found:
        if isinstance(data, Gap):  # bytes not kept: say where, move past them
            step.append(Piece(start, stream, b"", data.size))
            start += data.size
            continue
        step.append(Piece(start, stream, data))
        start += len(data)
    record = follower.execution  # ended only once all output was read (Follower)
    # (the window hands every connection the same record: most often no comparison)
    if record is not None and (follower.done or (record is not shown and record != shown)):
        step.append(record)
        shown = record
    return step, shown


def piece_json(stream: Stream, offset: int, data: bytes, dropped: int = 0) -> dict[str, Any]:
    """A tagged piece with its bytes once: ``text`` if valid UTF-8, else ``data`` (base64);
    or ``dropped``, the bytes not kept there (an output limit's gap)."""
    body: dict[str, Any] = {"stream": stream.name.lower(), "offset": offset}
    if dropped:
        return body | {"dropped": dropped}
    try:
        body["text"] = data.decode("utf-8")
    except UnicodeDecodeError:
        body["data"] = base64.b64encode(data).decode("ascii")
    return body


def event(kind: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def split(data: bytes, size: int) -> Iterator[tuple[int, bytes]]:
    """``data`` in parts of at most ``size`` bytes, cut between UTF-8 characters where
    possible, so each part of valid text stays valid text."""
    start = 0
    while start < len(data):
        end = min(start + size, len(data))
        if end < len(data):
            back = end
            while back > end - 3 and 0x80 <= data[back] < 0xC0:
                back -= 1  # data[back] continues a character: cut before its lead byte
            if back > start and not 0x80 <= data[back] < 0xC0:
                end = back
        yield start, data[start:end]
        start = end


def output_events(piece: Piece) -> bytes:
    """The ``output`` events of a piece, each of at most :data:`EVENT_PIECE` bytes. An
    event's ``id`` is the merged offset just past its bytes (where a reconnection resumes)."""
    events = []
    for start, data in split(piece.data, EVENT_PIECE):
        at = piece.start + start
        events.append(event("output", piece_json(piece.stream, at, data), at + len(data)))
    return "".join(events).encode()


class Events:
    """The server-sent events of one stream's steps; ``encoded`` makes (or finds) a piece's
    ``output`` events (the hub makes each once for all connections that send it)."""

    __slots__ = ("encoded", "shown")

    def __init__(self, encoded: Callable[[Piece], bytes] = output_events) -> None:
        self.encoded = encoded
        self.shown: Execution | None = None  # the record shown last

    def shows(self) -> tuple[object, ...] | None:
        """What the next record is compared with: two streams that show the same send the
        same events for the same steps."""
        shown = self.shown
        return None if shown is None else (shown.status, shown.progress, shown.progress_percent)

    def encode(self, step: list[Item]) -> bytes:
        """The events of ``step``, in order, as one write."""
        out: list[bytes] = []
        for item in step:
            if item is None:
                out.append(KEEPALIVE_EVENT)
            elif isinstance(item, Piece) and item.dropped:  # bytes not kept: say where
                gap = piece_json(item.stream, item.start, b"", item.dropped)
                out.append(event("gap", gap, item.end).encode())
            elif isinstance(item, Piece):
                out.append(self.encoded(item))
            elif isinstance(item, FeedError):
                out.append(event("problem", {"error": item.message}).encode())
            else:
                self._record(item, out)
        return out[0] if len(out) == 1 else b"".join(out)

    def _record(self, record: Execution, out: list[bytes]) -> None:
        shown = self.shown
        if shown is None or record.status != shown.status:
            out.append(event("status", record.to_json()).encode())
        elif (record.progress, record.progress_percent) != (
            shown.progress,
            shown.progress_percent,
        ):
            out.append(event("progress", record.to_json()).encode())
        self.shown = record
