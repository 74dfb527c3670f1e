"""Endpoints for operators: ``GET /metrics`` (Prometheus) and ``GET /healthz``."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from outspool.client import Outspool
from outspool.errors import StoreError
from outspool.metrics import registry

router = APIRouter()


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics: executions by status, queue depth, running, lost, bytes captured
    and stored, and this server process's writer (commit latency, pending bytes, retries)."""
    reg = request.app.state.metrics
    return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", responses={503: {"description": "The store does not answer."}})
async def healthz(request: Request) -> JSONResponse:
    """200 when the store answers a read, 503 (with the reason) otherwise. Needs no token."""
    spool: Outspool = request.app.state.spool
    try:
        await anyio.to_thread.run_sync(_probe, spool)
    except StoreError as exc:
        return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok", "store": spool.describe()})


def _probe(spool: Outspool) -> Any:
    return spool.list(limit=1)


def install(app: Any, spool: Outspool) -> None:
    app.state.metrics = registry(spool)
    app.include_router(router)
