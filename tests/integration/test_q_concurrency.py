"""Concurrent rewards on PostgreSQL: no lost update, and a close raced against itself counts once."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from backend.domain.model import Decision, Outcome, Side, Signal
from backend.domain.state import action_key, exposure_menu, pooled_keys
from backend.sizing.qlearning import Learning
from backend.store.db import make_engine
from backend.domain.rewards import Reward
from backend.execution.ports import Close, NewTrade
from backend.store.cache import MAX_AGE_S
from backend.store.repositories import Store

STATE, ACTION = "low_vol_trending|high|light|good", "1"
T0 = datetime(2020, 1, 1, tzinfo=timezone.utc)
KEYS = [action_key(e) for e in exposure_menu(3.0)]


def open_trades(store: Store, n: int, prefix: str = "s"):
    trades = []
    for i in range(n):
        signal = Signal(f"{prefix}{i}", f"{prefix.upper()}{i}", Side.BUY, 0.8)
        decision = Decision(True, f"{prefix.upper()}{i}", Side.BUY, 1_000.0, 10.0, 1.0, 100.0, 95.0, None,
                            "qlearning", "test", STATE, ACTION, 0.0, exposure=0.1)
        trade = store.trades.record_trade(NewTrade(signal, decision, f"c{prefix}{i}", 10_000.0, T0, None))
        store.trades.mark_open(trade.id, quantity=10.0, entry_price=100.0, at=T0, commission=0.0)
        trades.append(store.trades.trade_for_signal(signal.signal_id))
    return trades


def close(store: Store, trade, reward_value: float, decay: float = 1.0) -> bool:
    """Every exposure of the menu, in the state and the levels it pools with, learns `reward_value` x its index
    (as a real close teaches all of them in one transaction)."""
    outcome = Outcome(exposure=0.1, pnl_usd=10.0, pnl_pct=1.0, duration_hours=24.0, max_drawdown_pct=1.0,
                      equity_at_entry=10_000, trade_return=0.01)
    learning = Learning(tuple((level, key, reward_value * i) for level in pooled_keys(STATE)
                              for i, key in enumerate(KEYS)), decay, epsilon_decay=0.99, epsilon_min=0.01)
    return store.trades.close(trade, Close(101.0, "target", T0 + timedelta(days=1), 0.0, outcome,
                                           Reward(reward_value, "shaped_pnl"), learning))


@pytest.fixture
def store(pg_url):
    store = Store.open(make_engine(pg_url))
    store.q_table.ensure_agent(epsilon=0.5)
    yield store
    store.engine.dispose()


def test_concurrent_q_updates_lose_nothing(store):
    n = 40
    trades = open_trades(store, n)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda t: close(store, t, 2.0, decay=0.99), trades))
    assert all(results)
    total, cells = store.q_table.q_values(None, 0, 1000)
    assert total == 4 * len(KEYS)
    weight = (1 - 0.99**n) / (1 - 0.99)  # n rewards decayed by 0.99 each, whatever the order
    for cell in cells:
        i = KEYS.index(cell.action_key)
        assert cell.visits == n and cell.weight == pytest.approx(weight, rel=1e-12)
        assert cell.reward_sum == pytest.approx(2.0 * i * weight, rel=1e-12)
        assert cell.reward_sq_sum == pytest.approx((2.0 * i) ** 2 * weight, rel=1e-12)
    agent = store.q_table.agent()
    assert agent.total_updates == n
    assert agent.epsilon == pytest.approx(max(0.01, 0.5 * 0.99**n))


def test_a_close_raced_against_itself_rewards_once(store):
    (trade,) = open_trades(store, 1)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: close(store, trade, 1.0), range(8)))
    assert results.count(True) == 1
    cells = store.q_table.q_values(None, 0, 1000)[1]
    assert len(cells) == 4 * len(KEYS) and {c.visits for c in cells} == {1}
    assert {c.q for c in cells if c.action_key == ACTION} == {KEYS.index(ACTION) * 1.0}
    assert store.outcomes.outcomes(0, 10)[0] == 1


def test_decision_reads_see_local_writes_at_once_and_other_writers_within_the_cache_age(store, pg_url):
    keys = (STATE,)
    assert store.q_table.q_cells(keys) == ({}, 0.5)  # now cached
    (mine,) = open_trades(store, 1)
    close(store, mine, 1.0)
    cell = store.q_table.q_cells(keys)[0][STATE][ACTION]  # this process wrote: seen at once
    assert (cell.visits, cell.weight, cell.reward_sum) == (1, 1.0, KEYS.index(ACTION))

    other = Store.open(make_engine(pg_url))  # another worker process, as far as the database can tell
    (trade,) = open_trades(other, 1, prefix="w")
    close(other, trade, 1.0)
    time.sleep(MAX_AGE_S + 0.05)
    assert store.q_table.q_cells(keys)[0][STATE][ACTION].visits == 2
    other.engine.dispose()
