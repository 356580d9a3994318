"""The live A/B test: does the RL policy grow the account faster than the rule it is tested against?"""
from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import ServiceDep
from backend.api.schemas import UNAVAILABLE, ABOut
from backend.evaluation.ab import ArmTrade, report

router = APIRouter(prefix="/v1", tags=["learning"], responses={503: UNAVAILABLE})


@router.get("/ab", response_model=ABOut, summary="The live A/B test: RL sizing against the control")
def get_ab(service: ServiceDep) -> ABOut:
    """Per arm (rl, control): trades, win rate, average R-multiple, mean log growth per signal, max drawdown,
    Sharpe, recovery time and total PnL; the difference in mean log growth per signal with Welch's and a
    bootstrap interval, its p-value, the trades still needed for AB_POWER and the verdict at AB_ALPHA; Welch's
    t on the R-multiples. Every closed trade an arm sized counts, also after AB_ENABLED is turned off."""
    ab = service.settings.ab
    result = report([ArmTrade.of(t) for t in service.store.trades.ab_trades()], ab.alpha, ab.power, ab.seed)
    return ABOut(enabled=ab.enabled, rl_policy=service.risk.policy_name, control=ab.control,
                 rl_share=ab.rl_share, unit=ab.unit, alpha=ab.alpha, power=ab.power, **result)
