"""Health and metrics."""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from backend.api.deps import Sizer
from backend.api.schemas import UNAVAILABLE, Health, Problem
from backend.bootstrap import App

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health,
            responses={503: {"model": Health, "description": "degraded: a dependency is down (see checks)"}})
def healthz(sizer: Sizer, response: Response) -> dict:
    """One cheap probe per dependency (a query, a clock read, a PING); 503 `degraded` while any is down."""
    probes = {"database": lambda: _database(sizer),
              "broker": sizer.broker.health}
    if sizer.settings.redis_url:
        probes["redis"] = lambda: "ok" if _redis(sizer.settings.redis_url).ping() else "down: no PONG"
    checks = {name: _probe(probe) for name, probe in probes.items()}
    healthy = all(v.startswith("ok") for v in checks.values())
    response.status_code = 200 if healthy else 503
    return {"status": "ok" if healthy else "degraded", "checks": checks}


def _probe(probe: Callable[[], str]) -> str:
    try:
        return probe()
    except Exception as exc:  # reported, not raised: health must answer while a dependency is down
        return f"down: {exc.__class__.__name__}: {exc}"


def _database(sizer: App) -> str:
    with sizer.store.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return "ok"


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    """One pooled client per URL; short timeouts and no retries, so a dead Redis cannot stall the health check."""
    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))


@router.get("/metrics", response_class=PlainTextResponse, responses={
    200: {"description": "Prometheus text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}},
    503: {"description": UNAVAILABLE["description"],  # JSON, as every error (the route's own answer is text)
          "content": {"application/json": {"schema": Problem.model_json_schema()}}}})
def metrics(sizer: Sizer) -> Response:
    account = sizer.broker.account()
    sizer.metrics.equity.set(account.equity)
    sizer.metrics.exposure.set(account.exposure)
    sizer.metrics.epsilon.set(sizer.store.epsilon())
    collapse = getattr(sizer.risk.policy, "collapse", None)
    if collapse is not None:
        dominance, entropy = collapse()
        sizer.metrics.action_dominance.set(dominance)
        sizer.metrics.action_entropy.set(entropy)
    return Response(generate_latest(sizer.metrics.registry), media_type=CONTENT_TYPE_LATEST)
