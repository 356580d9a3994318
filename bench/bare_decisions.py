"""bench/decisions' named baseline: POST /v1/decisions with the service's request and response models (the same
validation and serialisation) and nothing behind them: no middleware, no sizing, no database. Served by uvicorn
like `sizer serve` (uvloop and httptools where installed)."""
from __future__ import annotations

import os

from fastapi import FastAPI

from backend.api.schemas import DecisionIn, DecisionOut
from backend.domain.model import Decision, Side

ANSWER = Decision(True, "SP500", Side.BUY, 10_000.0, 4.5, 1.0, 2_200.0, 2_150.0, None,
                  os.environ.get("SIZING_POLICY", "qlearning"), "a constant answer of the same shape",
                  "low_vol_trending|high|flat|neutral", "1", 0.0, None, (), 100_000.0, 0.1).to_json()
app = FastAPI()


@app.post("/v1/decisions", response_model=DecisionOut)
async def post_decision(body: DecisionIn) -> dict:
    body.to_signal()
    return ANSWER
