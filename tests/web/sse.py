"""A small server-sent events reader for tests (the wire format, parsed by hand)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]
    id: str | None

    @property
    def bytes(self) -> bytes:
        """An output event's bytes: sent once, as ``text`` (valid UTF-8) or ``data`` (base64)."""
        assert ("text" in self.data) != ("data" in self.data), self.data
        if "text" in self.data:
            return str(self.data["text"]).encode()
        return base64.b64decode(self.data["data"])


def events(response: httpx.Response) -> Iterator[Event]:
    """The events of a streaming response, as they arrive (comments and retry skipped)."""
    kind, data, event_id = "message", "", None
    for line in response.iter_lines():
        if not line:
            if data:
                yield Event(kind, json.loads(data), event_id)
            kind, data, event_id = "message", "", None
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                kind = value
            elif field == "data":
                data += value
            elif field == "id":
                event_id = value


def collect(client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> list[Event]:
    """Every event of a stream until the server ends it."""
    with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(events(response))


def output_of(found: list[Event]) -> bytes:
    return b"".join(e.bytes for e in found if e.kind == "output")
