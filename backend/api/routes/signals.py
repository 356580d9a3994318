"""Signals (execute) and decisions (size only)."""
from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Response
from starlette.concurrency import run_in_threadpool

from backend.api.deps import ServiceDep, row_dict
from backend.api.schemas import (
    MARKET_ENDED, TOO_LARGE, UNAVAILABLE, DecisionIn, DecisionOut, Id, OutcomeIn, OutcomeOut, SignalIn, SignalOut,
    SignalQueued, SignalState, problem,
)
from backend.execution.monitor import DecisionNotFound, ReportConflict
from backend.bus.base import SIGNALS

router = APIRouter(prefix="/v1", tags=["trading"])


@router.post("/signals", response_model=SignalOut | SignalQueued, status_code=201, summary="Execute a signal",
             responses={200: {"model": SignalOut, "description": "A replay, a skip (sized 0), a rejection or an exit: "
                                                                 "no new order"},
                        202: {"model": SignalQueued,
                              "description": "With workers (REDIS_URL): queued; GET /v1/signals/{id} has the outcome"},
                        409: MARKET_ENDED,
                        413: TOO_LARGE,
                        503: problem("The database, the broker or, with workers, the bus (Redis) is unreachable: "
                                     "nothing was placed or queued; send it again after Retry-After seconds")})
def post_signal(body: SignalIn, service: ServiceDep, response: Response) -> SignalOut | SignalQueued:
    """Size the signal (the policy, then every cap), place its order and follow the trade until it closes and
    the agent learns from it. Idempotent on `signal_id`: a replay answers what became of the first and places
    nothing. Sized 0, it is followed without an order (a shadow trade); an opposite signal closes the open trade.
    With workers (REDIS_URL) it is checked, queued and answered 202."""
    signal = body.to_signal()
    if service.queued:
        service.risk.check(signal)  # bad input is answered 422 here, as without workers, not after the 202
        service.bus.publish(SIGNALS, signal.to_event())
        service.metrics.signals.labels("queued").inc()
        response.status_code = 202
        return SignalQueued(signal_id=signal.signal_id)
    result = service.executor.handle(signal)
    service.metrics.signals.labels(result.status).inc()
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


@router.get("/signals/{signal_id}", response_model=SignalState, summary="What became of a signal",
            responses={404: problem("Not handled (yet)"), 503: UNAVAILABLE})
def get_signal(signal_id: Id, service: ServiceDep) -> SignalState:
    """What became of a signal: its stored decision and status, and its trade if it placed one. 404 until a
    worker has handled it."""
    seen = service.store.trades.signal(signal_id)
    if seen is None:
        raise HTTPException(404, f"signal {signal_id!r} is not known (yet)")
    trade = service.store.trades.trade_for_signal(signal_id)
    return SignalState(**row_dict(seen), trade_id=trade.id if trade else None,
                       trade_status=trade.status if trade else None)


@router.post("/decisions", response_model=DecisionOut, summary="Size a trade placed elsewhere",
             responses={409: MARKET_ENDED, 413: TOO_LARGE, 503: UNAVAILABLE})
async def post_decision(body: DecisionIn, service: ServiceDep) -> dict:
    """Size a trade your bot places elsewhere; nothing is sent to the broker. Report how it went with
    POST /v1/decisions/{decision_id}/outcome and the agent learns from it as from its own trades. Sizing reads
    the broker and the (cached) Q-table and stores the decision, in the thread pool (it waits on the database)."""
    started = time.perf_counter()
    decision = await run_in_threadpool(service.executor.decide, body.to_signal())
    service.metrics.decision_seconds.observe(time.perf_counter() - started)
    service.metrics.decisions.labels(decision.policy, str(decision.approved).lower()).inc()
    return decision.to_json()


@router.post("/decisions/{decision_id}/outcome", response_model=OutcomeOut, summary="Report how a sized trade went",
             responses={404: problem("No decision has this id"),
                        409: problem("The decision expired, or another outcome was reported for it"),
                        413: TOO_LARGE, 503: UNAVAILABLE})
def post_outcome(decision_id: Id, body: OutcomeIn, service: ServiceDep) -> OutcomeOut:
    """The outcome of a trade sized by POST /v1/decisions: the agent learns what every size of it would have
    earned, exactly once. The same report again is answered as the first time and changes nothing."""
    try:
        learned, trade = service.monitor.report(decision_id, body.to_report())
    except DecisionNotFound:
        raise HTTPException(404, f"no decision {decision_id!r}") from None
    except ReportConflict as exc:
        raise HTTPException(409, str(exc)) from None
    outcome = service.store.outcomes.outcome_of_trade(trade.id)
    return OutcomeOut(decision_id=decision_id, learned=learned, exposure=outcome.exposure,
                      trade_return=outcome.trade_return, reward=outcome.reward, trade_id=trade.id)
