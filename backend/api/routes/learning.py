"""What the agent has learned: Q-table, agent state, outcomes."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from backend.api.deps import Limit, Offset, ServiceDep, row_dict
from backend.api.schemas import UNAVAILABLE, AgentOut, Page
from backend.domain.state import ALL_STATE_KEYS, validate_state_key

router = APIRouter(prefix="/v1", tags=["learning"], responses={503: UNAVAILABLE})


def _state(state: str | None) -> str | None:
    if state is None:
        return None
    try:
        return validate_state_key(state, pooled=True)
    except ValueError as exc:
        raise HTTPException(422, [{"loc": ["query", "state"], "msg": str(exc), "type": "value_error"}]) from None


def _cell(row) -> dict:
    return {**row_dict(row), "q": row.q}


@router.get("/qtable", response_model=Page, summary="The Q-table")
def get_qtable(service: ServiceDep, state: str | None = None, offset: Offset = 0, limit: Limit = 100) -> Page:
    """Cells of the Q-table: per state (or pooled level such as `*|high|*|*`) and exposure, the decayed sums of
    the rewards it earned; q is their average."""
    total, rows = service.store.q_table.q_values(_state(state), offset, limit)
    return Page(total=total, offset=offset, limit=limit, items=[_cell(r) for r in rows])


@router.get("/qtable/top", response_model=list[dict], summary="The best cells of the Q-table")
def get_qtable_top(service: ServiceDep, limit: Limit = 10,
                   min_visits: Annotated[int, Query(ge=0, le=2**31 - 1)] = 1) -> list[dict]:  # visits is an int4
    """The full-state cells (no pooled level) with the highest average reward, among those visited at least
    `min_visits` times."""
    return [_cell(r) for r in service.store.q_table.top_q_values(limit, min_visits)]


@router.get("/agent", response_model=AgentOut, summary="The sizing agent")
def get_agent(service: ServiceDep) -> AgentOut:
    """The Q agent's settings and state (it learns from every closed trade, whichever policy sized it): its
    reward, confidence bound, prior and horizon, the exposure menu, exploration, recent win rate, how much it has
    learned and how much of the table it has seen; the trading state; and `serving`, the policy that sizes now,
    in its own terms."""
    settings = service.settings
    sizing, window, menu = settings.sizing, settings.state.win_rate_window, settings.risk.exposure_menu()
    agent = service.store.q_table.agent()
    cells, states = service.store.q_table.q_coverage()
    return AgentOut(
        policy=service.risk.policy_name,
        reward_fn=sizing.reward,
        confidence_z=sizing.confidence_z,
        prior_trades=sizing.prior_trades,
        horizon_trades=sizing.horizon_trades,
        menu=list(menu),
        epsilon=agent.epsilon,
        epsilon_initial=agent.epsilon_initial,
        epsilon_min=sizing.epsilon_min,
        epsilon_decay=sizing.epsilon_decay,
        recent_win_rate=service.store.outcomes.recent_win_rate(window),
        win_rate_window=window,
        decisions=service.store.trades.decision_counts(sizing.decision_report_hours),
        total_updates=agent.total_updates,
        last_updated=agent.last_updated_at,
        states=len(ALL_STATE_KEYS),
        actions=len(menu),
        visited_cells=cells,
        visited_states=states,
        trading_state=service.guard.status().state.value,
        serving=_serving(service.risk.policy),
    )


def _serving(policy) -> dict:
    """The policy that sizes now, in its own terms (the Q fields above describe the agent, which always learns)."""
    summary = " ".join((policy.__doc__ or "").strip().split("\n\n")[0].split())  # the docstring's first paragraph
    return {"policy": policy.name, "summary": summary, **(policy.describe() if hasattr(policy, "describe") else {})}


@router.get("/outcomes", response_model=Page, summary="Closed trades' outcomes and rewards")
def get_outcomes(service: ServiceDep, state: str | None = None, offset: Offset = 0, limit: Limit = 100) -> Page:
    """One per closed trade, newest first: its state and exposure, its return per unit of exposure after costs,
    the reward the agent learned, its P&L, duration and worst drawdown."""
    total, rows = service.store.outcomes.outcomes(offset, limit, _state(state))
    return Page(total=total, offset=offset, limit=limit, items=[row_dict(r) for r in rows])
