"""Trades and the broker's positions."""
from __future__ import annotations

import math

from fastapi import APIRouter

from backend.api.deps import Limit, Offset, ServiceDep, row_dict
from backend.api.schemas import UNAVAILABLE, Page, Symbol
from backend.domain.trade import TradeStatus

router = APIRouter(prefix="/v1", tags=["portfolio"])


@router.get("/trades", response_model=Page, summary="Trades and the decisions that sized them",
            responses={503: UNAVAILABLE})
def get_trades(
    service: ServiceDep,
    status: TradeStatus | None = None,
    symbol: Symbol | None = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> Page:
    """Every trade, newest first: its signal, the decision that sized it (policy, state and action keys, Q value,
    size, leverage, and `reasoning`: the decision in words), its fills and how it ended; shadow trades (sized 0,
    followed without an order) included."""
    total, rows = service.store.trades.trades(status, symbol, offset, limit)
    reasonings = service.store.trades.reasonings([r.signal_id for r in rows])
    return Page(total=total, offset=offset, limit=limit,
                items=[{**row_dict(r), "reasoning": reasonings.get(r.signal_id, "")} for r in rows])


@router.get("/positions", summary="The broker's account and positions", responses={503: UNAVAILABLE})
def get_positions(service: ServiceDep) -> dict:
    """The account (equity, cash, buying power, gross position value, exposure = gross / equity, null while equity
    is not positive) and each open position with its mark, as the broker reports them now."""
    account = service.broker.account()
    return {
        "as_of": service.broker.now(),
        "account": {**account.__dict__, "exposure": account.exposure if math.isfinite(account.exposure) else None},
        "positions": [p.__dict__ for p in service.broker.positions()],
    }


@router.get("/reconciliation", summary="The start-up reconciliation")
def get_reconciliation(service: ServiceDep) -> dict:
    """What the start-up comparison of the trade store with the broker found and did."""
    r = service.reconciliation
    return {"at": r.at, "broker": r.broker, "clean": not r.differences, "differences": r.differences}
