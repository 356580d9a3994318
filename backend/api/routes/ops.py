"""Health and metrics."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select

from backend.api.deps import ServiceDep
from backend.api.schemas import UNAVAILABLE, Health, Problem
from backend.bootstrap import Service
from backend.risk.trading_state import TradingState
from backend.store.db import probe_engine
from backend.store.tables import TradingStateRow

router = APIRouter(tags=["ops"])
T = TypeVar("T")


PROBE_TIMEOUT_S = 2.0
_PROBES = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")  # not the request threads: they may all wait
UNKNOWN = {"state": "unknown", "cause": "", "reason": "the database did not answer"}


@router.get("/healthz", response_model=Health, response_model_exclude_unset=True, summary="Health",
            responses={503: {"model": Health, "description": "degraded: a dependency is down (see checks)"}})
async def healthz(service: ServiceDep, response: Response) -> dict:
    """One cheap probe per dependency (a query, a clock read, a PING), each on its own thread and bounded by
    PROBE_TIMEOUT_S, so that busy request threads or a stuck dependency cannot stall it; 503 `degraded` while
    any is down."""
    timeout = f"down: no answer in {PROBE_TIMEOUT_S:g} s"
    probes = [_bounded(lambda: _database(service), (timeout, UNKNOWN)),
              _bounded(lambda: _probe(service.broker.health), timeout)]
    redis_url = service.settings.bus.redis_url
    if redis_url:
        probes.append(_bounded(lambda: _probe(lambda: "ok" if _redis(redis_url).ping()
                                              else "down: no PONG"), timeout))
    if service.queued:
        probes.append(_bounded(lambda: _dead_letters(service), None))
    (database, trading_state), broker, *rest = await asyncio.gather(*probes)
    checks = {"database": database, "broker": broker}
    if redis_url:
        checks["redis"] = rest.pop(0)
    healthy = all(v.startswith("ok") for v in checks.values())
    response.status_code = 200 if healthy else 503
    body = {"status": "ok" if healthy else "degraded", "checks": checks, "trading_state": trading_state}
    if service.queued:  # events for an operator to look at, not a fault of this service: health stays ok
        body["dead_letters"] = rest.pop(0)
    return body


async def _bounded(probe: Callable[[], T], on_timeout: T) -> T:
    try:
        return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(_PROBES, probe), PROBE_TIMEOUT_S)
    except asyncio.TimeoutError:
        return on_timeout


def _probe(probe: Callable[[], str]) -> str:
    try:
        return probe()
    except Exception as exc:  # reported, not raised: health must answer while a dependency is down
        return f"down: {exc.__class__.__name__}: {exc}"


def _database(service: Service) -> tuple[str, dict[str, str]]:
    """A query on a connection of its own (the service's pool may be taken by writers waiting for a lock), which
    reads the trading state."""
    try:
        with probe_engine(str(service.store.engine.url.render_as_string(hide_password=False))).connect() as conn:
            row = conn.execute(select(TradingStateRow.state, TradingStateRow.cause, TradingStateRow.reason)).first()
    except Exception as exc:  # reported, not raised: health must answer while a dependency is down
        return f"down: {exc.__class__.__name__}: {exc}", UNKNOWN
    state = dict(zip(("state", "cause", "reason"), row)) if row else {"state": "ACTIVE", "cause": "", "reason": ""}
    return "ok", state


def _dead_letters(service: Service) -> dict[str, int] | None:
    """Each topic's dead letters; None while Redis cannot say (checks.redis tells why)."""
    try:
        return service.dead_letters()
    except redis.RedisError:
        return None


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    """One pooled client per URL; short timeouts and no retries, so a dead Redis cannot stall the health check."""
    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics", responses={
    200: {"description": "Prometheus text exposition format",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    503: {"description": UNAVAILABLE["description"],  # JSON, as every error (the route's own answer is text)
          "content": {"application/json": {"schema": Problem.model_json_schema()}}}})
def metrics(service: ServiceDep) -> Response:
    """Signals, decisions and their latency, rewards, equity, exposure, exploration, the trading state, dead
    letters and, with the PPO policy, its action dominance and entropy (a collapse monitor)."""
    account = service.broker.account()
    service.metrics.equity.set(account.equity)
    service.metrics.exposure.set(account.exposure)
    service.metrics.epsilon.set(service.store.q_table.epsilon())
    current = service.guard.status().state
    for state in TradingState:
        service.metrics.trading_state.labels(state.value).set(float(state is current))
    for topic, count in (_dead_letters(service) or {}).items():
        service.metrics.dead_letters.labels(topic).set(count)
    collapse = getattr(service.risk.policy, "collapse", None)
    if collapse is not None:
        dominance, entropy = collapse()
        service.metrics.action_dominance.set(dominance)
        service.metrics.action_entropy.set(entropy)
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
