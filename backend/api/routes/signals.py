"""Signals (execute) and decisions (size only)."""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Response
from starlette.concurrency import run_in_threadpool

from backend.api.deps import Sizer, require_api_key, row_dict
from backend.api.schemas import DecisionIn, DecisionOut, SignalIn, SignalOut, SignalQueued, SignalState
from backend.bus.base import SIGNALS
from backend.store.repositories import decision_to_json

router = APIRouter(prefix="/v1", tags=["trading"])
# Both POST routes need the key: signals trade, and a decision draws on the policy's exploration (its RNG advances)
# and on the broker, so an open /v1/decisions would let anyone steer exploration and load the service.
Keyed = [Depends(require_api_key)]


@router.post("/signals", response_model=SignalOut | SignalQueued, status_code=201, dependencies=Keyed,
             responses={200: {"description": "A replay, a rejection or an exit: no new order"},
                        202: {"description": "With workers (REDIS_URL): queued; GET /v1/signals/{id} has the outcome"},
                        503: {"description": "The bus (Redis) is unreachable: nothing was queued, try again"}})
def post_signal(body: SignalIn, sizer: Sizer, response: Response) -> SignalOut | SignalQueued:
    signal = body.to_signal()
    if sizer.queued:
        sizer.bus.publish(SIGNALS, signal.to_event())
        sizer.metrics.signals.labels("queued").inc()
        response.status_code = 202
        return SignalQueued(signal_id=signal.signal_id)
    result = sizer.executor.handle(signal)
    sizer.metrics.signals.labels(result.status).inc()
    if result.replayed or result.status != "placed":
        response.status_code = 200
    return SignalOut(
        signal_id=result.signal_id,
        status=result.status,
        reason=result.reason,
        replayed=result.replayed,
        trade_id=result.trade_id,
        closed_trade_id=result.closed_trade_id,
        decision=result.decision,
    )


@router.get("/signals/{signal_id}", response_model=SignalState, responses={404: {"description": "Not handled yet"}})
def get_signal(signal_id: str, sizer: Sizer) -> SignalState:
    """What became of a signal: its stored decision and status, and its trade if it placed one. 404 until a
    worker has handled it."""
    seen = sizer.store.signal(signal_id)
    if seen is None:
        raise HTTPException(404, f"signal {signal_id!r} is not known (yet)")
    trade = sizer.store.trade_for_signal(signal_id)
    return SignalState(**row_dict(seen), trade_id=trade.id if trade else None,
                       trade_status=trade.status if trade else None)


@router.post("/decisions", response_model=DecisionOut, dependencies=Keyed)
async def post_decision(body: DecisionIn, sizer: Sizer) -> dict:
    """The hot path. Sizing reads the broker and the (cached) Q-table: with a broker that does network I/O it
    runs in the thread pool; with the in-memory simulator it runs inline, since a thread hand-off would cost
    more than the sizing (a cache miss blocks the loop for one short query, at most once a second per state)."""
    started = time.perf_counter()
    signal = body.to_signal()
    if sizer.broker.io_bound:
        decision = await run_in_threadpool(sizer.risk.decide, signal)
    else:
        decision = sizer.risk.decide(signal)
    sizer.metrics.decision_seconds.observe(time.perf_counter() - started)
    sizer.metrics.decisions.labels(decision.policy, str(decision.approved).lower()).inc()
    return decision_to_json(decision)
