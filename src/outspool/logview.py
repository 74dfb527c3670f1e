"""How ``outspool logs`` writes output: exact bytes, or lines with their time, stream and
execution (``-t``, ``--json``, ``--since``/``--until``, several executions)."""

from __future__ import annotations

import codecs
import json
import sys
from typing import Any

from outspool import display
from outspool.lines import Line, between
from outspool.models import Execution, Stream
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

    @property
    def by_line(self) -> bool:
        return self._timestamps or self._json or self._since is not None or self._until is not None

    def write(self, data: bytes) -> None:
        if not self._raw:
            data = self._decoder.decode(data).encode("utf-8", "surrogateescape")
        if data:
            self._out.write(data)
            self._out.flush()

    def lines(self, lines: list[Line], ex: Execution | None = None) -> None:
        out = bytearray()
        for line in between(lines, self._since, self._until):
            out += self._line(line, ex)
        if out:
            self._out.write(out)
            self._out.flush()

    def _line(self, line: Line, ex: Execution | None) -> bytes:
        if self._json:
            body: dict[str, Any] = {"time": rfc3339_ms(line.ms), "stream": line.stream.name.lower()}
            if ex is not None:
                body["id"] = ex.id
            body["text"] = line.data.decode("utf-8", "replace")
            return json.dumps(body, ensure_ascii=False).encode() + b"\n"
        head = self._prefix(ex) if ex is not None else b""
        if self._timestamps:
            head += rfc3339_ms(line.ms).encode() + b" "
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
