"""create_api: the FastAPI application, its lifespan (the service and its clock) and error mapping."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import OperationalError, TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.api.clock import MarketClock
from backend.api.deps import require_api_key
from backend.api.routes import ab, learning, market, ops, portfolio, signals, trading_state
from backend.api.schemas import problem
from backend.bootstrap import build_service
from backend.brokers.base import BrokerUnavailable, EndOfData
from backend.bus.base import BusUnavailable
from backend.config import Settings
from backend.risk import SizingError

DASHBOARD = Path(__file__).parent / "dashboard"
DASHBOARD_PAGE = (DASHBOARD / "index.html").read_text()


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether or not they declare a length. The body is read
    here, before the app sees it: an error raised while FastAPI reads a body is answered as its own 400."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(self.limit, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body ended
            body += message.get("body", b"")
            if len(body) > self.limit:
                return await _too_large(self.limit, send)
            more = message.get("more_body", False)
        whole: dict | None = {"type": "http.request", "body": bytes(body), "more_body": False}

        async def replay() -> dict:
            nonlocal whole
            message, whole = whole, None
            return message or await receive()

        await self.app(scope, replay, send)


async def _too_large(limit: int, send: Send) -> None:
    response = JSONResponse({"detail": f"request body larger than {limit} bytes"}, status_code=413)
    await response({"type": "http"}, None, send)


def create_api(settings: Settings, *, run_clock: bool = True) -> FastAPI:
    """The service. `run_clock=False`: the clock starts paused (POST /v1/clock steps or resumes it)."""

    @asynccontextmanager
    async def lifespan(api: FastAPI):
        service = await run_in_threadpool(lambda: build_service(settings, keep_sim=True))
        api.state.service = service
        api.state.clock = clock = MarketClock(service, paused=not run_clock)
        await run_in_threadpool(clock.sample)  # the equity history starts with the account as it starts
        ticking = asyncio.create_task(clock.run())
        try:
            yield
        finally:
            ticking.cancel()
            service.close()

    api = FastAPIOffline(  # /docs and /redoc with the Swagger UI and ReDoc files it ships: no CDN
        title="sizer",
        version="0.1.0",
        description="Reinforcement-learning position sizing: decisions, trades, outcomes and the Q-table.",
        lifespan=lifespan,
    )

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the offending input is not echoed: it may be NaN or megabytes long
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @api.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI answers a body it cannot decode with a bare 400; it is malformed JSON like any other
            error = {"loc": ["body"], "msg": "JSON decode error: the body is not UTF-8", "type": "json_invalid"}
            return JSONResponse({"detail": [error]}, status_code=422)
        return await http_exception_handler(request, exc)

    async def _dependency_down(request: Request, exc: Exception) -> JSONResponse:
        """A dependency is down: say which and why; the request changed nothing, so it can be sent again."""
        if isinstance(exc, OperationalError):
            detail = f"database unavailable: {exc.orig}"
        elif isinstance(exc, PoolTimeout):
            detail = "database busy: every connection is taken (another writer holds a lock); try again"
        else:
            detail = f"{'broker unavailable' if isinstance(exc, BrokerUnavailable) else 'signal not queued'}: {exc}"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})

    for unavailable in (BrokerUnavailable, BusUnavailable, OperationalError, PoolTimeout):
        api.add_exception_handler(unavailable, _dependency_down)

    @api.exception_handler(EndOfData)
    async def _market_ended(request: Request, exc: EndOfData) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @api.exception_handler(SizingError)
    async def _sizing_error(request: Request, exc: SizingError) -> JSONResponse:
        return JSONResponse(
            {"detail": [{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}]}, status_code=422
        )

    for module in (signals, learning, portfolio, trading_state, ab, market):
        api.include_router(module.router, dependencies=[Depends(require_api_key)], responses={
            401: problem("SIZER_API_KEY is set and the X-API-Key header is missing or does not match it")})
    api.include_router(ops.router)
    api.mount("/dashboard", StaticFiles(directory=DASHBOARD), name="dashboard")

    @api.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        """The dashboard: a page that reads the documented /v1 endpoints (backend/api/dashboard/). It is told
        whether its reads need SIZER_API_KEY, so that it asks for the key before sending any."""
        needs_key = settings.service.api_key is not None and not settings.service.open_reads
        return HTMLResponse(DASHBOARD_PAGE.replace("{{needs_key}}", str(needs_key).lower()))

    api.add_middleware(BodyLimit, limit=settings.service.max_body_bytes)
    return api
