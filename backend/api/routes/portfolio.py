"""Trades and the broker's positions."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from backend.api.deps import Limit, Offset, Sizer, row_dict
from backend.api.schemas import UNAVAILABLE, Page, Symbol

router = APIRouter(prefix="/v1", tags=["portfolio"])


@router.get("/trades", response_model=Page, responses={503: UNAVAILABLE})
def get_trades(
    sizer: Sizer,
    status: Literal["pending", "open", "closing", "closed", "rejected", "canceled", "external"] | None = None,
    symbol: Symbol | None = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> Page:
    total, rows = sizer.store.trades(status, symbol, offset, limit)
    return Page(total=total, offset=offset, limit=limit, items=[row_dict(r) for r in rows])


@router.get("/positions", responses={503: UNAVAILABLE})
def get_positions(sizer: Sizer) -> dict:
    account = sizer.broker.account()
    return {
        "as_of": sizer.broker.now(),
        "account": {**account.__dict__, "exposure": account.exposure},
        "positions": [p.__dict__ for p in sizer.broker.positions()],
    }


@router.get("/reconciliation")
def get_reconciliation(sizer: Sizer) -> dict:
    """What the start-up comparison of the trade store with the broker found and did."""
    r = sizer.reconciliation
    return {"at": r.at, "broker": r.broker, "clean": not r.differences, "differences": r.differences}
