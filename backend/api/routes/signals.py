"""Signals (execute) and decisions (size only)."""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Response
from starlette.concurrency import run_in_threadpool

from backend.api.deps import Sizer, require_api_key
from backend.api.schemas import DecisionIn, DecisionOut, SignalIn, SignalOut
from backend.store.repositories import decision_to_json

# Both routes need the key: signals trade, and a decision draws on the policy's exploration (its RNG advances)
# and on the broker, so an open /v1/decisions would let anyone steer exploration and load the service.
router = APIRouter(prefix="/v1", tags=["trading"], dependencies=[Depends(require_api_key)])


@router.post("/signals", response_model=SignalOut, status_code=201,
             responses={200: {"description": "A replay, a rejection or an exit: no new order"}})
def post_signal(body: SignalIn, sizer: Sizer, response: Response) -> SignalOut:
    result = sizer.executor.handle(body.to_signal())
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


@router.post("/decisions", response_model=DecisionOut)
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
