"""Watches positions: fills open and close trades, every bar marks them, and a close becomes a reward."""
from __future__ import annotations

import logging
from datetime import datetime

from backend.brokers.base import Broker, OrderRequest, OrderRejected
from backend.config import Settings
from backend.domain.model import Fill, Outcome, Side
from backend.domain.rewards import REWARDS
from backend.store.repositories import Reward, Store
from backend.store.tables import TradeRow

log = logging.getLogger(__name__)


def adverse_excursion_pct(trade: TradeRow, worst_price: float) -> float:
    """Loss at `worst_price` as a percent of the margin the trade committed (0 when it is a gain)."""
    margin = trade.quantity * trade.entry_price / trade.leverage
    loss = (trade.entry_price - worst_price) * trade.quantity * (1 if trade.side == "buy" else -1)
    return max(0.0, 100.0 * loss / margin)


def outcome_of(trade: TradeRow, exit_price: float, closed_at: datetime, exit_commission: float) -> Outcome:
    sign = 1 if trade.side == "buy" else -1
    pnl = sign * (exit_price - trade.entry_price) * trade.quantity - trade.commission_usd - exit_commission
    margin = trade.quantity * trade.entry_price / trade.leverage
    return Outcome(
        pnl_usd=pnl,
        pnl_pct=100.0 * pnl / margin,
        duration_hours=(closed_at - trade.opened_at).total_seconds() / 3600.0,
        max_drawdown_pct=max(trade.max_adverse_pct, adverse_excursion_pct(trade, exit_price)),
        equity_at_entry=trade.equity_at_entry,
    )


class PositionMonitor:
    def __init__(self, settings: Settings, store: Store, broker: Broker, on_reward=None) -> None:
        self._s = settings
        self._store = store
        self._broker = broker
        self._reward_fn = REWARDS[settings.rl_sizing_reward]
        self._on_reward = on_reward or (lambda trade, outcome, reward: None)

    def on_fill(self, fill: Fill) -> None:
        trade = self._store.trade_by_order(fill.client_order_id)
        if trade is not None and trade.status == "pending":
            self._store.mark_open(trade.id, quantity=fill.quantity, entry_price=fill.price, at=fill.ts,
                                  commission=fill.commission)
            return
        trade = self._store.active_trade(fill.symbol)
        if trade is None or trade.status not in ("open", "closing") or trade.side == fill.side.value:
            log.warning("fill %s (%s %s %s) matches no open trade; ignored", fill.client_order_id,
                        fill.side.value, fill.quantity, fill.symbol)
            return
        self.close(trade, fill)

    def close(self, trade: TradeRow, fill: Fill) -> bool:
        """Record the outcome and apply its reward; False if this close was already recorded."""
        outcome = outcome_of(trade, fill.price, fill.ts, fill.commission)
        reward = Reward(
            value=self._reward_fn(outcome),
            fn=self._s.rl_sizing_reward,
            alpha=self._s.rl_sizing_alpha,
            epsilon_decay=self._s.rl_sizing_epsilon_decay,
            epsilon_min=self._s.rl_sizing_epsilon_min,
        )
        first = self._store.close_and_learn(
            trade,
            exit_price=fill.price,
            exit_reason=trade.exit_reason or fill.reason,
            closed_at=fill.ts,
            commission=fill.commission,
            outcome=outcome,
            reward=reward,
        )
        if first:
            log.info("closed trade %s %s: pnl %.2f%% dd %.2f%% reward %.4f (%s)", trade.id, trade.symbol,
                     outcome.pnl_pct, outcome.max_drawdown_pct, reward.value, reward.fn)
            self._on_reward(trade, outcome, reward)
        return first

    def reconcile(self) -> list[str]:
        """At start-up: an active trade whose order the broker does not know and whose symbol it holds no
        position in cannot be settled (a simulated account starts afresh on every start); cancel it."""
        held = {p.symbol for p in self._broker.positions()}
        notes = []
        for trade in self._store.active_trades():
            if trade.symbol in held or self._broker.find_order(trade.client_order_id) is not None:
                continue
            reason = f"the {self._broker.name} broker has no order or position for it (restarted)"
            self._store.cancel_trade(trade.id, reason)
            notes.append(f"trade {trade.id} ({trade.symbol}, {trade.status}) canceled: {reason}")
            log.warning(notes[-1])
        return notes

    def on_bar(self) -> None:
        """Mark every open trade with the latest bar: adverse excursion, and time limits."""
        now = self._broker.now()
        worst: dict[int, float] = {}
        for trade in self._store.active_trades():
            if trade.status != "open":
                continue
            bar = self._broker.history(trade.symbol, 1)
            adverse = float(bar.low[-1] if trade.side == "buy" else bar.high[-1])
            worst[trade.id] = adverse_excursion_pct(trade, adverse)
            if trade.deadline_at is not None and now >= trade.deadline_at:
                self.request_close(trade, "time_limit")
        self._store.update_adverse_excursions(worst)

    def request_close(self, trade: TradeRow, reason: str) -> None:
        """Send the exit order (idempotent: its client id derives from the trade's)."""
        order = OrderRequest(
            client_order_id=f"{trade.client_order_id}-x",
            symbol=trade.symbol,
            side=Side(trade.side).opposite,
            quantity=trade.quantity,
            reduce_only=True,
        )
        try:
            self._broker.submit(order)
        except OrderRejected as exc:  # e.g. a stop closed it first; the fill will settle the trade
            log.warning("exit of trade %s refused: %s", trade.id, exc)
            return
        self._store.mark_closing(trade.id, reason)
