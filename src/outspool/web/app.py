"""The ASGI app: the API router, the page, error mapping, the security middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from outspool import __version__
from outspool.client import Outspool
from outspool.errors import (
    ConfigError,
    DamagedError,
    InvalidStateError,
    NotFoundError,
    OutspoolError,
    SpawnError,
    StoreError,
)
from outspool.prune import Retention
from outspool.web import ops
from outspool.web.api import router
from outspool.web.security import Guard
from outspool.web.streams import Hub

STATIC = Path(__file__).parent / "static"
MAX_BODY = 1 << 20
#: The page runs only its own script and style; program output can never become code.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
STATUS_OF: list[tuple[type[OutspoolError], int]] = [
    (NotFoundError, 404),
    (InvalidStateError, 409),
    (DamagedError, 500),  # stored output failed its checksum: not a passing outage
    (StoreError, 503),
    (ConfigError, 400),
    (SpawnError, 400),
]
log = logging.getLogger("outspool.web")


def create_app(spool: Outspool, *, token: str | None = None, max_body: int = MAX_BODY) -> Any:
    """The app serving ``spool`` (opened by the caller, closed by the caller after)."""
    hub = Hub(spool)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        retention = Retention(spool.store, spool.settings)
        task = asyncio.create_task(_retain(retention)) if retention.enabled else None
        recovering = asyncio.create_task(_mark_lost_now_and_then(spool), name="outspool-lost")
        yield
        recovering.cancel()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await hub.close()

    # The reference page at /api/docs serves Swagger UI's files itself: it works offline.
    app = FastAPIOffline(
        title="outspool",
        version=__version__,
        summary="Captured program output: list, read, follow live, submit, cancel.",
        lifespan=lifespan,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        static_url="/api/docs/assets",
        swagger_ui_oauth2_redirect_url="/api/docs/oauth2-redirect",
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.spool = spool
    app.state.hub = hub
    app.include_router(router)
    ops.install(app, spool)
    _add_error_handlers(app)
    _add_page(app)
    return Guard(app, token, max_body)


async def _retain(retention: Retention) -> None:
    """Apply the retention settings now and every ``retention_interval`` while serving."""
    while True:
        try:
            pruned = await anyio.to_thread.run_sync(retention.apply, time.monotonic())
            if pruned.count:
                log.info("retention deleted %d executions (%d bytes)", pruned.count, pruned.bytes)
        except OutspoolError as exc:
            log.warning("retention could not run: %s", exc)
        await asyncio.sleep(retention.interval)


async def _mark_lost_now_and_then(spool: Outspool) -> None:
    """With only ``serve`` running, dead captures are still noticed and marked ``lost``.

    It never kills: leftover programs of a lost execution are ``worker``'s and
    ``recover``'s to kill (a server may run on another machine, or as another user).
    """
    while True:
        await asyncio.sleep(spool.settings.heartbeat_timeout / 2)
        try:
            ended = await anyio.to_thread.run_sync(spool.mark_lost)
        except OutspoolError as exc:
            log.warning("looking for lost executions failed, retrying: %s", exc)
            continue
        for execution_id in ended:
            log.warning("%s lost: its capturing process stopped heartbeating", execution_id)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OutspoolError)
    async def outspool_error(request: Request, exc: Exception) -> JSONResponse:
        status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 400)
        return _error(status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail = [
            {"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}", detail=detail)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")


def _add_page(app: FastAPI) -> None:
    headers = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=headers)

    @app.get("/x/{execution_id}", include_in_schema=False)
    async def execution_page(execution_id: str) -> FileResponse:
        """An execution's page (the script reads the ID from the address)."""
        return FileResponse(STATIC / "index.html", headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
