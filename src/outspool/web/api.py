"""The JSON API under ``/api``: parse, call the library, format.

Blocking library calls run in worker threads: plain ``def`` routes are run by
FastAPI in its thread pool, and the live stream follows through the library's
follower (:mod:`outspool.web.streams`); only :class:`~outspool.Outspool` is
called. Output is returned two ways in JSON: ``text``, decoded as UTF-8 with
replacement (for display), and ``data``, the exact bytes in base64. Tagged
pieces (the live events, ``/pieces``) carry their bytes once: ``text`` when
they are valid UTF-8 on their own, else ``data`` (base64).
"""

from __future__ import annotations

import base64
import logging
import re
import time
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.types import Send

from outspool import labels
from outspool.client import Outspool
from outspool.errors import ConfigError, NotFoundError, OutspoolError
from outspool.follow import Range
from outspool.jobs import Job
from outspool.models import Execution, Status, Stream
from outspool.search import MAX_PATTERN, Window, compile_pattern
from outspool.settings import MAX_TIMEOUT
from outspool.web.sse import piece_json
from outspool.web.streams import Hub
from outspool.web.wire import wire_of
from outspool.when import parse_when, rfc3339_ms

router = APIRouter(prefix="/api")
log = logging.getLogger("outspool.web")

StreamName = Literal["stdout", "stderr", "all"]
STREAMS: dict[str, Stream | None] = {"stdout": Stream.STDOUT, "stderr": Stream.STDERR, "all": None}
MAX_OFFSET = 1 << 62
MAX_RANGE = 4 << 20
RAW_CHECKED = 8 << 20  # a download checks this much output before it sends its headers
_REF = re.compile(r"[^\x00-\x1f\x7f]{1,1024}")  # an ID, a prefix, or a name

IdPath = Annotated[
    str,
    Path(max_length=1024, description="An execution ID, a unique prefix, or a name (newest)."),
]
StreamQuery = Annotated[StreamName, Query(description="stdout, stderr, or all (arrival order).")]


def spool_of(request: Request) -> Outspool:
    spool: Outspool = request.app.state.spool
    return spool


def get_execution(spool: Outspool, execution_id: str) -> Execution:
    if not _REF.fullmatch(execution_id):
        raise NotFoundError(f"no execution {execution_id!r}")
    return spool.get(execution_id)


# --- reading ---------------------------------------------------------------------------


@router.get("/executions")
def list_executions(
    request: Request,
    *,
    status: Status | None = None,
    name: Annotated[str | None, Query(max_length=1024, description="Only this name.")] = None,
    label: Annotated[
        list[str] | None,
        Query(max_length=64, description="`KEY=VALUE`, repeatable: all must match."),
    ] = None,
    since: Annotated[
        str | None,
        Query(max_length=64, description="Created at or after: RFC 3339, or a duration (10m)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: Annotated[str | None, Query(max_length=64, description="`next` of a page.")] = None,
) -> dict[str, Any]:
    """Executions, newest first. Pass a page's ``next`` as ``before`` for the page after it."""
    spool = spool_of(request)
    cursor = get_execution(spool, before).id if before else None
    found = spool.list(
        status,
        limit + 1,
        cursor,
        name=name,
        labels=labels.parse_all(label or ()),
        since=parse_when(since, time.time()) if since else None,
    )
    page = found[:limit]
    more = len(found) > limit
    return {"executions": [ex.to_json() for ex in page], "next": page[-1].id if more else None}


@router.get("/executions/{execution_id}")
def show(request: Request, execution_id: IdPath) -> dict[str, Any]:
    """The record (the same fields as ``outspool show --json``)."""
    return get_execution(spool_of(request), execution_id).to_json()


def _range_json(ex: Execution, stream: str, got: Range) -> dict[str, Any]:
    return {
        "id": ex.id,
        "stream": stream,
        "offset": got.offset,
        "next_offset": got.next_offset,
        "dropped": got.dropped,
        "size": len(got.data),
        "eof": got.eof,
        "text": got.data.decode("utf-8", "replace"),
        "data": base64.b64encode(got.data).decode("ascii"),
    }


@router.get("/executions/{execution_id}/output")
def output(
    request: Request,
    *,
    execution_id: IdPath,
    stream: StreamQuery = "all",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_RANGE)] = 1 << 20,
    timestamps: Annotated[bool, Query(description="Add `line_times`.")] = False,
) -> dict[str, Any]:
    """Up to ``limit`` bytes of a stream from byte ``offset``; continue at ``next_offset``.

    ``text`` is UTF-8 with replacement (a character cut by the range shows as
    U+FFFD); ``data`` is the exact bytes in base64. ``eof``: nothing more is stored yet.
    With ``timestamps=true``, ``line_times`` lists ``[position, time]`` (RFC 3339, UTC, ms)
    for the range's first byte and each line start after it: when it was read; a position
    counts from ``offset`` (so past a gap, the first is ``dropped``).
    """
    spool = spool_of(request)
    ex = get_execution(spool, execution_id)
    got = spool.output(ex.id, STREAMS[stream], offset, limit)
    body = _range_json(ex, stream, got)
    if timestamps:  # positions count from ``offset``: past a gap, data starts ``dropped`` later
        begins = got.offset + got.dropped
        starts = spool.line_starts(ex.id, STREAMS[stream], begins, got.data)
        body["line_times"] = [[got.dropped + pos, rfc3339_ms(ms)] for pos, ms in starts]
    return body


@router.get("/executions/{execution_id}/tail")
def tail(
    request: Request,
    execution_id: IdPath,
    lines: Annotated[int, Query(ge=0, le=100_000)] = 100,
    stream: StreamQuery = "all",
) -> dict[str, Any]:
    """The last ``lines`` lines; ``next_offset`` is where a follower continues."""
    spool = spool_of(request)
    ex = get_execution(spool, execution_id)
    return _range_json(ex, stream, spool.tail(ex.id, lines, STREAMS[stream]))


@router.get("/executions/{execution_id}/pieces")
def pieces(
    request: Request,
    execution_id: IdPath,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_RANGE)] = 1 << 20,
    lines: Annotated[bool, Query(description="Start at a line boundary and number it.")] = False,
) -> dict[str, Any]:
    """Up to ``limit`` bytes of both streams in arrival order from byte ``offset``, as
    pieces tagged with their stream (what the page shows). Continue at ``next_offset``.

    With ``lines=true`` the range starts at the nearest offset at or before
    ``offset`` where no line of either stream is open, and ``line`` is the number
    of lines started before it (a line starts at a stream's first byte and after
    each of its newlines). This reads all the output before ``offset``.
    """
    spool = spool_of(request)
    ex = get_execution(spool, execution_id)
    line = None
    if lines:
        offset, line = spool.line_boundary(ex.id, offset)
    got = spool.pieces(ex.id, offset, limit)
    body: dict[str, Any] = {
        "id": ex.id,
        "offset": offset,
        "next_offset": got.next_offset,
        "eof": got.eof,
        "pieces": [piece_json(p.stream, p.start, p.data, p.dropped) for p in got.pieces],
    }
    if line is not None:
        body["line"] = line
    return body


@router.get(
    "/executions/{execution_id}/raw",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def raw(request: Request, execution_id: IdPath, stream: StreamQuery = "all") -> StreamingResponse:
    """The exact stored bytes, streamed chunk by chunk, as a download.

    Past an output limit only the kept bytes (head, then tail) are sent; the
    ``X-Outspool-Stdout-Dropped`` and ``X-Outspool-Stderr-Dropped`` headers say
    how many bytes of each stream were not kept.

    Damaged output (a chunk failing its checksum) within the first 8 MiB is a 500
    JSON error, sent instead of the download; further on, the body ends incomplete
    (no last chunk), so a client sees a failed transfer, never a short file.
    """
    spool = spool_of(request)
    ex = get_execution(spool, execution_id)
    chunks = spool.iter_output(ex.id, STREAMS[stream], checked=RAW_CHECKED)
    filename = f"{ex.id}.{stream}.log"
    return Download(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Outspool-Stdout-Dropped": str(ex.stdout_dropped),
            "X-Outspool-Stderr-Dropped": str(ex.stderr_dropped),
        },
    )


@router.get("/search")
def search_output(
    request: Request,
    *,
    pattern: Annotated[str, Query(min_length=1, max_length=MAX_PATTERN)],
    ids: Annotated[
        list[str] | None,
        Query(alias="id", max_length=64, description="Executions (ID or name) to search."),
    ] = None,
    label: Annotated[list[str] | None, Query(max_length=64, description="`KEY=VALUE`.")] = None,
    since: Annotated[str | None, Query(max_length=64, description="RFC 3339 or 10m.")] = None,
    until: Annotated[str | None, Query(max_length=64, description="RFC 3339 or 10m.")] = None,
    stream: StreamQuery = "all",
    ignore_case: bool = False,
    executions: Annotated[int, Query(ge=1, le=1000)] = 100,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Lines matching ``pattern`` (a Python regular expression), like ``outspool grep``:
    in the executions named by ``id``, else in the newest ``executions`` with every ``label``.
    ``truncated``: more than ``limit`` lines matched."""
    spool = spool_of(request)
    rx = compile_pattern(pattern, ignore_case)
    now = time.time()
    window = Window.of(
        parse_when(since, now) if since else None, parse_when(until, now) if until else None
    )
    if ids:
        targets = [get_execution(spool, ref) for ref in ids]
    else:
        targets = spool.list(labels=labels.parse_all(label or ()), limit=executions)
    found: list[dict[str, Any]] = []
    for ex in targets:
        for m in spool.search(ex.id, rx, STREAMS[stream], window):
            if len(found) == limit:
                return {"matches": found, "truncated": True}
            found.append({"id": m.execution_id, "line": m.line, "text": m.text})
    return {"matches": found, "truncated": False}


class Download(StreamingResponse):
    """A streamed body that a store error ends incomplete (and logged), not cleanly: the
    client's transfer fails instead of looking complete."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OutspoolError as exc:
            log.error("a download ended early: %s", exc)
            return  # no final chunk: the server closes the connection mid-body
        await send({"type": "http.response.body", "body": b"", "more_body": False})


# --- following -------------------------------------------------------------------------


@router.get(
    "/executions/{execution_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    request: Request,
    execution_id: IdPath,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """Server-sent events: ``output``, ``progress``, ``status`` (the last one final),
    ``problem`` (the store failed; the stream ends).

    An ``output`` event's ``id`` is the offset in the merged stream just past
    its bytes, so a client reconnecting with ``Last-Event-ID`` (or ``?offset=``)
    gets the rest with no gap and no duplicate. Its data: ``stream``,
    ``offset`` (where its bytes start) and the bytes once: ``text`` when they
    are valid UTF-8 on their own, else ``data`` (base64). ``progress`` and
    ``status`` carry the record.
    """
    spool = spool_of(request)
    ex = await anyio.to_thread.run_sync(get_execution, spool, execution_id)
    if last_event_id is not None:
        if not last_event_id.isdigit() or int(last_event_id) > MAX_OFFSET:
            raise ConfigError(f"Last-Event-ID must be a byte offset, not {last_event_id!r}")
        offset = int(last_event_id)
    hub: Hub = request.app.state.hub
    return StreamingResponse(
        hub.events(ex, offset, wire_of(request.scope)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# --- the queue -------------------------------------------------------------------------


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("must not contain NUL characters")
    return value


class Submission(BaseModel):
    """A :class:`~outspool.jobs.Job`, field for field: ``command`` as a list, or
    ``language`` and ``code``, and the same options as ``outspool submit``."""

    model_config = ConfigDict(extra="forbid")

    command: list[Annotated[str, Field(max_length=65536)]] | None = Field(
        None, min_length=1, max_length=4096
    )
    language: str | None = Field(None, max_length=64)
    code: str | None = None
    name: str | None = Field(None, max_length=1024)
    timeout: float | None = Field(None, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False)
    env: dict[str, str] = Field(default_factory=dict, max_length=4096)
    cwd: str | None = Field(None, max_length=4096)
    pty: bool = False
    network: bool = False
    cpu_time: float | None = Field(None, gt=0, le=366 * 86400, allow_inf_nan=False)
    memory: int | None = Field(None, gt=0, le=1 << 50)
    max_processes: int | None = Field(None, gt=0, le=1 << 22)
    max_file_size: int | None = Field(None, gt=0, le=1 << 50)
    #: NAME -> value: in the program's environment, masked in its output, never returned.
    secrets: dict[str, Annotated[str, Field(min_length=8, max_length=65536)]] = Field(
        default_factory=dict, max_length=256
    )
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    max_output: int | None = Field(None, ge=0, le=1 << 62)

    @model_validator(mode="after")
    def _one_program(self) -> Submission:
        if bool(self.command) == bool(self.language):
            raise ValueError("give either command (a list) or language with code")
        if self.language and self.code is None:
            raise ValueError("language needs code")
        for text in [*(self.command or ()), self.code or "", self.cwd or "", self.name or ""]:
            _no_nul(text)
        for key, value in [*self.env.items(), *self.secrets.items()]:
            if not key or "=" in key:
                raise ValueError(f"bad environment variable name {key!r}")
            _no_nul(key + value)
        return self

    def job(self) -> Job:
        fields = self.model_dump()
        return Job(command=tuple(fields.pop("command") or ()), **fields)


@router.post("/executions", status_code=201)
def submit(request: Request, response: Response, body: Submission) -> dict[str, Any]:
    """Queue a program for a worker (``outspool worker``); 201 with the new record."""
    ex = spool_of(request).submit(body.job())
    response.headers["Location"] = f"/api/executions/{ex.id}"
    return ex.to_json()


@router.post("/executions/{execution_id}/cancel")
def cancel(request: Request, execution_id: IdPath) -> dict[str, Any]:
    """A queued execution ends ``cancelled`` now; a running one is asked to stop.

    409 when it has already ended.
    """
    spool = spool_of(request)
    return spool.cancel(get_execution(spool, execution_id).id).to_json()


@router.delete("/executions/{execution_id}", status_code=204)
def delete(
    request: Request,
    execution_id: IdPath,
    force: Annotated[bool, Query(description="Cancel a queued or running one first.")] = False,
) -> Response:
    """Delete an execution and all its output.

    409 when it is queued or running (unless ``force``, which cancels it and
    waits for its end); 404 for an unknown ID.
    """
    spool = spool_of(request)
    spool.delete(get_execution(spool, execution_id).id, force=force)
    return Response(status_code=204)
