"""A small case of bench/sizing in the suite: the Q agent, through the whole live engine on a generated market
with a known answer, comes to size as the oracle does, and sizes nothing without an edge."""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from backend.brokers.sim import SimBroker
from backend.config import Settings
from backend.data.synthetic import (
    GRID, PROTECTIONS_OFF, SYMBOL, WARMUP, WIDE_CAPS, Case, coin_case, market, truth,
)
from backend.replay import run_replay

TRADES = 400


def exposures(case: Case, tmp_path, seed: int = 3) -> list[float]:
    """The exposure each signal was sized at, in order (0: skipped, followed without an order)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{tmp_path}/{case.kind}.db"
    settings = Settings(database_url=url, sim_symbols=(SYMBOL,), rl_sizing_seed=1, **WIDE_CAPS,
                        **PROTECTIONS_OFF)
    m = market(case, seed)
    broker = SimBroker({SYMBOL: m.series}, start_index=WARMUP - 1, initial_cash=settings.sim.initial_cash,
                       multiplier=settings.sim.multiplier, maintenance_margin=settings.risk.maintenance_margin)
    summary = run_replay(settings, broker=broker, signals=m.schedule())
    engine = sa.create_engine(url)
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT t.signal_id, o.exposure FROM outcome o JOIN trade t ON t.id = o.trade_id"))
        by_signal = dict(rows.all())
    engine.dispose()
    assert summary.signals == TRADES and len(by_signal) == TRADES  # every signal closed and taught the agent
    return [by_signal[s.signal_id] for s in m.signals]


def test_the_agent_converges_to_the_oracles_exposure_on_a_clear_edge(tmp_path):
    case = coin_case(f_star=3.0, t500=12, trades=TRADES)  # +-16% moves, the edge clear within a hundred trades
    oracle = truth(case, maintenance=0.1, samples=20_000).oracle("all")
    taken = np.array(exposures(case, tmp_path))
    # no evidence of an edge yet: skipped (followed without an order); each trade here is worth t = 0.54, so five
    # of them are not yet significant at the default z = 1.28
    assert taken[:5].max() == 0
    thirds = [taken[i * TRADES // 3:(i + 1) * TRADES // 3].mean() for i in range(3)]
    assert thirds[0] < thirds[1] <= thirds[2]  # more evidence, a bigger bet
    # the last trades are sized at the oracle's 3x as the agent estimates it, within the caps: the stop, 1.5 a
    # away, lets the risk cap (50% of equity at the stop) allow at most 0.5 / 0.24 = 2.1x here; never past 2 f*
    allowed = min(oracle, WIDE_CAPS["rm_max_risk_pct"] / (1.5 * case.a))
    assert 0.75 * allowed <= np.median(taken[-100:]) <= 1.25 * oracle
    assert taken.max() <= 2 * oracle and oracle in GRID


def test_the_agent_sizes_nothing_on_a_fair_coin(tmp_path):
    """The issue's bound, a median over market seeds: at most 0.05x on average. On a single seed a lucky run
    can pass the significance gate for a while (about one seed in seven bets 0.1x over the last half)."""
    taken = [np.array(exposures(Case("fair", "coin", TRADES, p=0.5, a=0.05), tmp_path / str(seed), seed))
             for seed in (3, 4, 5)]
    assert np.median([t.mean() for t in taken]) <= 0.05
    assert all((t == 0).mean() >= 0.8 for t in taken)
