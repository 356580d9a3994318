"""The trading state on the real store and engine: protections trip it and say why, the operator sets it, every
change is logged, and while it is not ACTIVE nothing adds exposure."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import httpx
import pytest

from backend.api.app import create_api
from backend.bootstrap import build_service
from backend.domain.model import Outcome, Side, Signal
from backend.domain.rewards import Reward
from backend.execution.ports import Close, NewTrade
from backend.risk.protections import protections_from
from backend.risk.trading_state import TradingGuard, TradingState
from backend.store.trading_state_repo import TradingStateRepository
from tests.conftest import make_settings

T0 = datetime(2024, 3, 4, 15, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def service(db_url):
    service = build_service(make_settings(database_url=db_url, sim_start=date(2008, 3, 3), sizing_policy="fixed",
                                          sizing_fixed_exposure=0.5))
    yield service
    service.close()


def guard_for(service, clock: Clock, **limits) -> TradingGuard:
    risk = service.settings.replace(**limits).risk
    return TradingGuard(TradingStateRepository(service.store.engine), protections_from(risk), clock)


def own_trade(service, n: int, won: bool, closed_at: datetime) -> None:
    """A placed trade of this account and its outcome, through the store's own writes."""
    decision = service.risk.decide(Signal(f"t{n}", "SP500", Side.BUY, 0.7))
    trade = service.store.trades.record_trade(NewTrade(Signal(f"t{n}", "SP500", Side.BUY, 0.7), decision, f"c{n}",
                                                   decision.equity, closed_at, None))
    service.store.trades.mark_open(trade.id, quantity=decision.quantity, entry_price=decision.price, at=closed_at,
                               commission=0.0)
    outcome = Outcome(exposure=0.5, pnl_usd=1.0 if won else -1.0, pnl_pct=1.0 if won else -1.0, duration_hours=1.0,
                      max_drawdown_pct=0.0, equity_at_entry=decision.equity, trade_return=0.01 if won else -0.01)
    assert service.store.trades.close(trade, Close(decision.price * (1.01 if won else 0.99), "stop", closed_at, 0.0,
                                               outcome, Reward(0.0, "log_growth"), None))


def test_each_protection_moves_the_state_and_lets_go(service):
    clock = Clock()
    guard = guard_for(service, clock, rm_max_daily_loss_pct=0.05, rm_max_drawdown_pct=0.2, rm_loss_streak=3,
                      rm_loss_streak_cooldown_hours=24, rm_max_trades_per_day=None)
    assert guard.evaluate(100_000).state is TradingState.ACTIVE
    assert guard.evaluate(94_000).state is TradingState.REDUCING and guard.status().cause == "daily_loss"
    clock.now += timedelta(days=1)  # a new day starts from its own equity
    assert guard.evaluate(94_000).state is TradingState.ACTIVE
    status = guard.evaluate(79_000)  # 21% below the 100k peak, 16% today: the stricter verdict wins
    assert (status.state, status.cause) == (TradingState.HALTED, "drawdown") and "below its peak" in status.reason
    clock.now += timedelta(days=3)
    assert guard.evaluate(79_000).state is TradingState.HALTED  # a drawdown waits for the operator
    assert guard.set_by_operator(TradingState.ACTIVE, "reviewed", 79_000).state is TradingState.ACTIVE

    own_trade(service, 9, won=False, closed_at=clock.now - timedelta(hours=1))  # before the operator's reset: forgiven
    clock.now += timedelta(hours=4)
    for n in range(2):
        own_trade(service, n, won=False, closed_at=clock.now - timedelta(hours=3 - n))
    assert guard.evaluate(79_000).state is TradingState.ACTIVE
    for n in range(2, 3):
        own_trade(service, n, won=False, closed_at=clock.now - timedelta(hours=3 - n))
    status = guard.evaluate(79_000)
    assert (status.state, status.cause) == (TradingState.REDUCING, "loss_streak")
    clock.now += timedelta(hours=24)
    assert guard.evaluate(79_000).state is TradingState.ACTIVE

    changes = [(c.from_state, c.to_state, c.cause) for c in reversed(guard.changes(20))]
    assert changes == [("ACTIVE", "REDUCING", "daily_loss"), ("REDUCING", "ACTIVE", ""),
                       ("ACTIVE", "HALTED", "drawdown"), ("HALTED", "ACTIVE", ""),
                       ("ACTIVE", "REDUCING", "loss_streak"), ("REDUCING", "ACTIVE", "")]


def test_trades_per_day_counts_only_this_accounts_orders(service):
    clock = Clock()
    guard = guard_for(service, clock, rm_max_trades_per_day=2, rm_loss_streak=None)
    own_trade(service, 0, won=True, closed_at=clock.now)
    service.executor.decide(Signal("", "SP500", Side.BUY, 0.9))  # a decision for a bot trading elsewhere
    assert guard.evaluate(100_000).state is TradingState.ACTIVE
    own_trade(service, 1, won=True, closed_at=clock.now)
    status = guard.evaluate(100_000)
    assert (status.state, status.cause) == (TradingState.REDUCING, "trades_per_day")


def test_the_operators_hold_wins_until_lifted(service):
    clock = Clock()
    guard = guard_for(service, clock)
    status = guard.set_by_operator(TradingState.REDUCING, "earnings week", 100_000)
    assert (status.state, status.cause, status.reason) == (TradingState.REDUCING, "operator", "earnings week")
    assert guard.evaluate(100_000).state is TradingState.REDUCING  # protections cannot lift it
    assert guard.set_by_operator(TradingState.HALTED, "broker outage", 100_000).state is TradingState.HALTED
    assert guard.set_by_operator(TradingState.ACTIVE, "back", 100_000).state is TradingState.ACTIVE


def test_a_tripped_drawdown_stops_new_exposure_in_the_engine(db_url):
    service = build_service(make_settings(database_url=db_url, sim_start=date(2008, 9, 2), sizing_policy="fixed",
                                          sizing_fixed_exposure=3.0, rm_max_drawdown_pct=0.02, rm_max_risk_pct=0.3))
    try:
        for day in range(60):
            if service.store.trades.active_trade("SP500") is None:
                service.executor.handle(Signal(f"s{day}", "SP500", Side.BUY, 0.7, time_limit_hours=48))
            service.engine.step()
            if service.guard.status().state is TradingState.HALTED:
                break
        status = service.guard.status()
        assert (status.state, status.cause) == (TradingState.HALTED, "drawdown")
        while service.store.trades.active_trade("SP500") is not None:
            service.engine.step()  # stops and time limits still close what is open
        after = service.executor.handle(Signal("after", "SP500", Side.BUY, 0.7))
        assert after.status == "skipped" and "trading state HALTED (drawdown" in after.reason
        assert after.decision["size_usd"] == 0 and "trading_state" in after.decision["capped_by"]
        assert service.broker.open_orders() == []
    finally:
        service.close()


def test_halted_refuses_exits_by_signal_reducing_allows_them(service):
    service.executor.handle(Signal("long", "SP500", Side.BUY, 0.7))
    service.engine.step()
    equity = service.broker.account().equity
    service.guard.set_by_operator(TradingState.HALTED, "hands off", equity)
    refused = service.executor.handle(Signal("out-1", "SP500", Side.SELL, 0.7))
    assert refused.status == "rejected" and "HALTED" in refused.reason
    service.guard.set_by_operator(TradingState.REDUCING, "wind down", equity)
    assert service.executor.handle(Signal("out-2", "SP500", Side.SELL, 0.7)).status == "exit"
    service.engine.step()
    assert service.store.trades.trade_for_signal("long").status == "closed"


async def test_the_api_shows_and_sets_the_state(sqlite_url):
    app = create_api(make_settings(database_url=sqlite_url, sizer_api_key="k" * 32), run_clock=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer") as client:
            body = {"state": "HALTED", "reason": "maintenance"}
            assert (await client.post("/v1/trading-state", json=body)).status_code == 401
            r = await client.post("/v1/trading-state", json=body, headers={"X-API-Key": "k" * 32})
            assert r.status_code == 200, r.text
            out = r.json()
            assert (out["state"], out["cause"], out["reason"]) == ("HALTED", "operator", "maintenance")
            assert out["changes"][0]["to_state"] == "HALTED" and out["protections"] == ["daily_loss", "drawdown",
                                                                                       "loss_streak"]
            health = (await client.get("/healthz")).json()
            assert health["trading_state"]["state"] == "HALTED"
            metrics = (await client.get("/metrics")).text
            assert 'sizer_trading_state{state="HALTED"} 1.0' in metrics
            assert 'sizer_trading_state{state="ACTIVE"} 0.0' in metrics
            assert (await client.get("/v1/agent", headers={"X-API-Key": "k" * 32})).json()["trading_state"] == "HALTED"
            bad = await client.post("/v1/trading-state", json={"state": "PAUSED", "reason": "x"},
                                    headers={"X-API-Key": "k" * 32})
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "state"
