"""The trading state: what the protections and the operator allow now, and every change with its cause."""
from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import ServiceDep, row_dict
from backend.api.schemas import TOO_LARGE, UNAVAILABLE, TradingStateIn, TradingStateOut
from backend.bootstrap import Service
from backend.risk.trading_state import TradingState

router = APIRouter(prefix="/v1", tags=["risk"], responses={503: UNAVAILABLE})


def _out(service: Service) -> TradingStateOut:
    status = service.guard.status()
    changes = service.guard.changes(20)
    return TradingStateOut(state=status.state.value, cause=status.cause, reason=status.reason,
                           changed_at=status.changed_at, protections=[p.name for p in service.guard.protections],
                           changes=[row_dict(c) for c in changes])


@router.get("/trading-state", response_model=TradingStateOut, summary="The trading state")
def get_trading_state(service: ServiceDep) -> TradingStateOut:
    """ACTIVE (trading), REDUCING (only exits: no new exposure) or HALTED (nothing new; stops, targets and time
    limits still close positions), what set it, and its last 20 changes. Signals that would add exposure while
    it is not ACTIVE are sized 0 and followed without an order, so the agent keeps learning."""
    return _out(service)


@router.post("/trading-state", response_model=TradingStateOut, summary="Set the trading state by hand",
             responses={413: TOO_LARGE})
def post_trading_state(body: TradingStateIn, service: ServiceDep) -> TradingStateOut:
    """Set the state by hand. REDUCING or HALTED hold until ACTIVE is set again; ACTIVE acknowledges what tripped
    (the equity peak, the day's start and the losing streak start again from now), after which any protection
    still tripped sets the state again, and the answer says so."""
    service.guard.set_by_operator(TradingState(body.state), body.reason, service.broker.account().equity)
    return _out(service)
