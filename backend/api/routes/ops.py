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
from backend.risk.trading_state import TradingState

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health, response_model_exclude_unset=True,
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
    body = {"status": "ok" if healthy else "degraded", "checks": checks, "trading_state": _trading_state(sizer)}
    if sizer.queued:  # events for an operator to look at, not a fault of this service: health stays ok
        body["dead_letters"] = _dead_letters(sizer)
    return body


def _trading_state(sizer: App) -> dict[str, str]:
    try:
        status = sizer.guard.status()
    except Exception as exc:  # it lives in the database, whose outage the checks already report
        return {"state": "unknown", "cause": "", "reason": f"{exc.__class__.__name__}: {exc}"}
    return {"state": status.state.value, "cause": status.cause, "reason": status.reason}


def _probe(probe: Callable[[], str]) -> str:
    try:
        return probe()
    except Exception as exc:  # reported, not raised: health must answer while a dependency is down
        return f"down: {exc.__class__.__name__}: {exc}"


def _database(sizer: App) -> str:
    with sizer.store.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return "ok"


def _dead_letters(sizer: App) -> dict[str, int] | None:
    """Each topic's dead letters; None while Redis cannot say (checks.redis tells why)."""
    try:
        return sizer.dead_letters()
    except redis.RedisError:
        return None


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    """One pooled client per URL; short timeouts and no retries, so a dead Redis cannot stall the health check."""
    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))


@router.get("/metrics", response_class=PlainTextResponse, responses={
    200: {"description": "Prometheus text exposition format",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    503: {"description": UNAVAILABLE["description"],  # JSON, as every error (the route's own answer is text)
          "content": {"application/json": {"schema": Problem.model_json_schema()}}}})
def metrics(sizer: Sizer) -> Response:
    account = sizer.broker.account()
    sizer.metrics.equity.set(account.equity)
    sizer.metrics.exposure.set(account.exposure)
    sizer.metrics.epsilon.set(sizer.store.epsilon())
    current = sizer.guard.status().state
    for state in TradingState:
        sizer.metrics.trading_state.labels(state.value).set(float(state is current))
    for topic, count in (_dead_letters(sizer) or {}).items():
        sizer.metrics.dead_letters.labels(topic).set(count)
    collapse = getattr(sizer.risk.policy, "collapse", None)
    if collapse is not None:
        dominance, entropy = collapse()
        sizer.metrics.action_dominance.set(dominance)
        sizer.metrics.action_entropy.set(entropy)
    return Response(generate_latest(sizer.metrics.registry), media_type=CONTENT_TYPE_LATEST)
