"""How ``outspool logs`` writes output: exact bytes, or lines with their time, stream and
execution (``-t``, ``--json``, ``--since``/``--until``, several executions)."""

from __future__ import annotations

import codecs
import json
import sys
from typing import Any

from outspool import display
from outspool.follow import Gap
from outspool.lines import Line, between
from outspool.models import Execution, Stream
from outspool.units import count
from outspool.when import rfc3339_ms


class LineView:
    """Writes output to stdout: bytes exact with --raw, else UTF-8 with replacement (a
    character split across two chunks is decoded whole); lines with their time, stream
    or execution when asked."""

    def __init__(
        self,
        stream: Stream | None,
        *,
        timestamps: bool,
        as_json: bool,
        raw: bool,
        since: float | None,
        until: float | None,
    ) -> None:
        self.stream = stream
        self._timestamps = timestamps
        self._json = as_json
        self._raw = raw
        self._since = since
        self._until = until
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._out = sys.stdout.buffer
        self._colour = display.use_colour(sys.stdout)
        self._prefixes: dict[str, str] = {}
        self._ended_line = True

    @property
    def since(self) -> float | None:
        return self._since

    @property
    def until(self) -> float | None:
        return self._until

    @property
    def by_line(self) -> bool:
        return self._timestamps or self._json or self._since is not None or self._until is not None

    def write(self, data: bytes | Gap) -> None:
        """Output bytes; a :class:`Gap` is one marker line (none with --raw: kept bytes only)."""
        if isinstance(data, Gap):
            if not self._raw:
                lead = b"" if self._ended_line else b"\n"
                self.write(lead + marker(data.size).encode() + b"\n")
            return
        self._ended_line = data.endswith(b"\n") if data else self._ended_line
        if not self._raw:
            data = self._decoder.decode(data).encode("utf-8", "surrogateescape")
        if data:
            self._out.write(data)
            self._out.flush()

    def lines(self, lines: list[Line], ex: Execution | None = None) -> None:
        out = bytearray()
        for line in between(lines, self._since, self._until):
            if line.dropped and not self._ended_line and not self._json:
                out += b"\n"  # the line cut by the gap: the marker gets a line of its own
            out += self._line(line, ex)
            self._ended_line = line.ended
        if out:
            self._out.write(out)
            self._out.flush()

    def _line(self, line: Line, ex: Execution | None) -> bytes:
        if self._json:
            body: dict[str, Any] = {"time": rfc3339_ms(line.ms), "stream": line.stream.name.lower()}
            if ex is not None:
                body["id"] = ex.id
            if line.dropped:
                body["dropped"] = line.dropped
            else:
                body["text"] = line.data.decode("utf-8", "replace")
            return json.dumps(body, ensure_ascii=False).encode() + b"\n"
        head = self._prefix(ex) if ex is not None else b""
        if self._timestamps:
            head += rfc3339_ms(line.ms).encode() + b" "
        if line.dropped:
            return head + marker(line.dropped).encode() + b"\n"
        text = line.data if self._raw else line.data.decode("utf-8", "replace").encode()
        return head + text + (b"\n" if line.ended else b"")

    def _prefix(self, ex: Execution) -> bytes:
        if ex.id not in self._prefixes:
            label = display.one_line(ex.name or ex.id[:12], 24)
            self._prefixes[ex.id] = display.prefix(label, len(self._prefixes), self._colour)
        return self._prefixes[ex.id].encode()

    def close(self) -> None:
        if not self._raw:
            self.write(self._decoder.decode(b"", final=True).encode())
        self._out.flush()


def marker(dropped: int) -> str:
    """The one line shown where an output limit dropped bytes."""
    return f"[outspool: {count(dropped)} bytes dropped]"
