"""The market's clock, and the account sampled at each of its ticks."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from backend.api.deps import Clock
from backend.api.clock import BrokerClock
from backend.api.schemas import TOO_LARGE, UNAVAILABLE, ClockIn, ClockOut, EquityOut, problem

router = APIRouter(prefix="/v1", tags=["market"])


@router.get("/clock", response_model=ClockOut, summary="The market's clock")
def get_clock(clock: Clock) -> dict:
    """The simulated market's time, the bars still to come, whether it is paused and how fast it runs; with a
    real broker (Alpaca), its clock and how often open trades are polled."""
    return clock.state()


@router.post("/clock", response_model=ClockOut, summary="Pause, resume, step or speed up the simulated market",
             responses={409: problem("The clock is a real broker's, or the data have fewer bars left than the "
                                     "steps asked for (nothing was stepped)"),
                        413: TOO_LARGE, 503: UNAVAILABLE})
async def post_clock(body: ClockIn, clock: Clock) -> dict:
    """Drive the simulated market: a step shows the next bars at once (orders fill, open trades are marked and
    may close, the agent learns), as the running clock would. Pause and speed last until changed or until the
    service restarts (it starts running at speed 1)."""
    try:
        clock.control(paused=body.paused, speed=body.speed)
    except BrokerClock as exc:
        raise HTTPException(409, str(exc)) from None
    if body.step:
        await clock.step(body.step)
    return clock.state()


@router.get("/equity", response_model=EquityOut, summary="Equity and exposure over time")
def get_equity(clock: Clock, limit: Annotated[int, Query(ge=1, le=2000)] = 500) -> EquityOut:
    """The account (equity, cash, gross position value and exposure = gross / equity) sampled at every tick of
    the clock since the service started, the latest `limit` samples, oldest first. Kept in memory: a restart
    starts it again."""
    return EquityOut(samples=list(clock.history)[-limit:])
