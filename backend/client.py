"""SizerClient: the typed Python client for bots that trade elsewhere and ask sizer how much.

    from backend.client import SizerClient

    with SizerClient("http://127.0.0.1:8000", api_key="...") as sizer:
        d = sizer.decide("AAPL", "buy", confidence=0.8, stop_price=185.0)
        if d.approved:
            ...  # place d.quantity (d.exposure x equity, at d.leverage) with your own broker
        sizer.report(d.decision_id, entry_price=..., exit_price=..., quantity=..., opened_at=..., closed_at=...,
                     worst_price=...)

Errors: SizerError with the HTTP status and sizer's detail (422: a field at fault; 404: unknown decision; 409:
expired, or another outcome reported already; 401: the API key; 503: a dependency down, try again).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx


class SizerError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"sizer answered {status}: {detail}")
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class SizedTrade:
    """sizer's answer: place `quantity` (`exposure` x equity, at `leverage`) when `approved`."""

    decision_id: str | None
    approved: bool
    skipped: bool
    symbol: str
    side: str
    exposure: float
    size_usd: float
    quantity: float
    leverage: float
    price: float
    stop_price: float
    target_price: float | None
    policy: str
    reasoning: str


@dataclass(frozen=True)
class Learned:
    decision_id: str
    learned: bool  # False: this same report had been learned before
    exposure: float
    trade_return: float
    reward: float


class SizerClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 10.0,
                 http: httpx.Client | None = None) -> None:
        """`http`: an httpx.Client of your own (a test client, a proxy); base_url and timeout are then its own."""
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        if api_key:
            self._http.headers["X-API-Key"] = api_key

    def decide(self, symbol: str, side: str, confidence: float, *, price: float | None = None,
               stop_price: float | None = None, target_price: float | None = None,
               time_limit_hours: float | None = None) -> SizedTrade:
        body = {"symbol": symbol, "side": side, "confidence": confidence, "price": price, "stop_price": stop_price,
                "target_price": target_price, "time_limit_hours": time_limit_hours}
        d = self._post("/v1/decisions", {k: v for k, v in body.items() if v is not None})
        return SizedTrade(**{f: d[f] for f in SizedTrade.__dataclass_fields__})

    def report(self, decision_id: str, *, entry_price: float, exit_price: float, quantity: float,
               opened_at: datetime, closed_at: datetime, worst_price: float, commission: float = 0.0) -> Learned:
        body = {"entry_price": entry_price, "exit_price": exit_price, "quantity": quantity,
                "opened_at": opened_at.isoformat(), "closed_at": closed_at.isoformat(), "worst_price": worst_price,
                "commission": commission}
        d = self._post(f"/v1/decisions/{decision_id}/outcome", body)
        return Learned(**{f: d[f] for f in Learned.__dataclass_fields__})

    def _post(self, path: str, body: dict) -> dict:
        r = self._http.post(path, json=body)
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text
            raise SizerError(r.status_code, detail)
        return r.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "SizerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
