"""Watches positions: fills open and close trades, every bar marks them, and a close becomes a reward."""
from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Callable, Protocol

from backend.brokers.base import Broker, OrderRequest, OrderRejected
from backend.config import SizingSettings
from backend.domain.model import Fill, OrderEnded, OutcomeReport, Side, TradePath, bracket_exit
from backend.domain.rewards import REWARDS, Reward, reward_of
from backend.domain.trade import Trade, TradeStatus, utcnow
from backend.execution.ports import Close, TradeRepository
from backend.risk import SizingError
from backend.sizing.qlearning import Learning

log = logging.getLogger(__name__)


EXIT_ATTEMPTS = 3
PENDING_GRACE_S = 60.0  # a pending trade's order may still be on its way (another thread or worker is sending it)


def exit_order_id(entry_order_id: str, attempt: int) -> str:
    """The client id of a trade's exit order; a new attempt (after one ended unfilled) gets a new id."""
    return f"{entry_order_id}-x" + (str(attempt) if attempt > 1 else "")


def entry_order_id(client_order_id: str) -> str | None:
    """The entry order id an exit order id was derived from (None: not one of our exit ids)."""
    base, sep, attempt = client_order_id.rpartition("-x")
    return base if sep and (attempt == "" or attempt.isdigit()) else None


class DecisionNotFound(LookupError):
    """No POST /v1/decisions decision has this id."""


class ReportConflict(Exception):
    """The decision expired, or another outcome was learned for it already."""


class Learner(Protocol):
    def learn(self, path: TradePath, state_key: str, equity: float, weight: float = 1.0) -> Learning: ...


class PositionMonitor:
    def __init__(self, sizing: SizingSettings, trades: TradeRepository, broker: Broker, learner: Learner | None = None,
                 on_reward=None, pending_grace_s: float = PENDING_GRACE_S) -> None:
        self._s = sizing
        self._pending_grace_s = pending_grace_s
        self._trades = trades
        self._broker = broker
        self._learner = learner
        self._reward_fn = REWARDS[sizing.reward]
        self._on_reward = on_reward or (lambda trade, outcome, reward: None)

    # --- broker events -------------------------------------------------------------------------------
    def on_fill(self, fill: Fill) -> None:
        trade = self._trades.trade_by_order(fill.client_order_id)
        if trade is not None and trade.status in (TradeStatus.PENDING, TradeStatus.OPEN):  # the entry order, wholly or in part
            self._trades.mark_open(trade.id, quantity=fill.quantity, entry_price=fill.price, at=fill.ts,
                                   commission=fill.commission)
            return
        # any other fill against an active trade's side closes it: our exit, a bracket leg, or a close by hand
        trade = self._trades.active_trade(fill.symbol)
        if (trade is None or trade.shadow or trade.status not in (TradeStatus.OPEN, TradeStatus.CLOSING)
                or trade.side == fill.side):
            log.warning("fill %s (%s %s %s) matches no open trade; ignored", fill.client_order_id,
                        fill.side.value, fill.quantity, fill.symbol)
            return
        if not fill.final:
            log.info("trade %s: exit order %s partly filled (%s of %s)", trade.id, fill.client_order_id,
                     fill.quantity, trade.quantity)
            return
        if fill.quantity < trade.quantity - 1e-9:
            log.warning("trade %s: its exit %s filled %s of %s; the rest stays in the account untracked",
                        trade.id, fill.client_order_id, fill.quantity, trade.quantity)
        self.close(trade, fill)

    def on_order_ended(self, event: OrderEnded) -> None:
        """An order stopped working unfilled or part-filled: settle the trade it belongs to."""
        note = f"broker {event.status}: {event.message}".rstrip(": ")
        trade = self._trades.trade_by_order(event.client_order_id)
        if trade is not None:  # its entry order
            if trade.status != TradeStatus.PENDING:
                log.info("trade %s: entry order %s after %s filled; the trade keeps that", trade.id, event.status,
                         event.filled_quantity)
            elif event.status == "rejected":
                self._trades.reject_trade(trade.id, note)
            else:
                self._trades.cancel_trade(trade.id, note)
            return
        entry = entry_order_id(event.client_order_id)
        trade = self._trades.trade_by_order(entry) if entry else None
        if trade is not None and trade.status == TradeStatus.CLOSING:
            log.warning("trade %s: exit order %s %s; open again", trade.id, event.client_order_id, event.status)
            self._trades.reopen(trade.id, f"exit order {note}")

    def close(self, trade: Trade, fill: Fill) -> bool:
        """Record the outcome of a trade its exit fill closed, and what it teaches; False if this close was
        already recorded."""
        path = trade.path(fill.price, fill.ts, trade.cost_rate(fill.commission))
        return self._settle(trade, path, trade.exposure, trade.exit_reason or fill.reason, fill.ts, fill.commission)

    def _close_shadow(self, trade: Trade, price: float, reason: str, worst: float | None = None) -> bool:
        """A trade sized 0 ends where a placed one would have; its path is charged RL_SHADOW_COST_BPS."""
        now = self._broker.now()
        path = trade.path(price, now, self._s.shadow_cost_bps / 1e4, worst)
        return self._settle(trade, path, 0.0, reason, now, 0.0)

    def report(self, decision_id: str, report: OutcomeReport) -> tuple[bool, Trade]:
        """The outcome of a POST /v1/decisions decision, traded elsewhere: it teaches as a trade sizer placed
        itself (the counterfactual update), exactly once. Returns (True: learned now | False: this report was
        already learned, trade). Raises DecisionNotFound, ReportConflict (expired, or another report learned
        already), SizingError (a field that contradicts the decision)."""
        self._trades.flush_decisions()  # it may have been made a moment ago
        trade = self._trades.trade_for_signal(decision_id)
        signal = self._trades.signal(decision_id)
        if trade is None or signal is None or signal.status != "decided":
            raise DecisionNotFound(decision_id)
        sign = trade.side.sign
        if sign * (report.worst_price - min(report.entry_price, report.exit_price, key=lambda p: sign * p)) > 0:
            raise SizingError("worst_price", f"a {trade.side.value} trade's worst price is at or below (for a sell: above) "
                                             "both its entry and its exit")
        reported = dict(entry_price=report.entry_price, quantity=report.quantity, opened_at=report.opened_at,
                        worst_price=report.worst_price)
        if trade.status == TradeStatus.EXTERNAL:
            if utcnow() - trade.created_at > timedelta(hours=self._s.decision_report_hours):
                raise ReportConflict(f"decision {decision_id} expired unreported "
                                     f"{self._s.decision_report_hours:g} h after it was made")
            notional = report.quantity * report.entry_price
            if not (math.isfinite(notional) and notional > 0):
                raise SizingError("quantity", "quantity x entry_price must be a positive, finite notional")
            path = TradePath(trade.side, report.entry_price, report.exit_price, report.worst_price,
                             report.commission / notional, (report.closed_at - report.opened_at).total_seconds() / 3600.0)
            exposure = notional / trade.equity_at_entry
            outcome = path.outcome(exposure, trade.equity_at_entry, None)
            if not all(math.isfinite(v) for v in (outcome.trade_return, outcome.pnl_usd, outcome.pnl_pct, exposure)):
                raise SizingError("quantity", "these prices and quantity give no finite outcome")
            if self._settle(trade, path, exposure, "reported", report.closed_at, report.commission, reported):
                return True, self._trades.trade_for_signal(decision_id)
            trade = self._trades.trade_for_signal(decision_id)  # a concurrent report won
        same = (trade.status == TradeStatus.CLOSED and trade.exit_price == report.exit_price and trade.closed_at ==
                report.closed_at and all(getattr(trade, k) == v for k, v in reported.items())
                and trade.commission_usd == report.commission)
        if not same:
            raise ReportConflict(f"decision {decision_id} already has another outcome")
        return False, trade

    def _settle(self, trade: Trade, path: TradePath, exposure: float, reason: str, at: datetime,
                commission: float, reported: dict | None = None) -> bool:
        outcome = path.outcome(exposure, trade.equity_at_entry, None)  # what really happened
        reward = Reward(reward_of(outcome, self._reward_fn), self._s.reward)
        learning = None
        if self._learner is not None and trade.rl_state_key is not None:
            overlapping = self._trades.trades_held_beside(trade, at)
            learning = self._learner.learn(path, trade.rl_state_key, trade.equity_at_entry, 1.0 / (1 + overlapping))
        first = self._trades.close(trade, Close(path.exit_price, reason, at, commission, outcome, reward, learning,
                                                reported))
        if first:
            log.info("closed %strade %s %s: return %.2f%% at %.2fx, reward %.4f (%s)",
                     "shadow " if trade.shadow else "", trade.id, trade.symbol, 100 * outcome.trade_return,
                     exposure, reward.value, reward.fn)
            self._on_reward(trade, outcome, reward)
        return first

    # --- start-up reconciliation ------------------------------------------------------------------------
    def reconcile(self, alone: bool = True) -> list[str]:
        """Compare the store's active trades with the broker's orders and positions, repair what the broker
        can tell us (a fill or close missed while down), cancel what it cannot, and report every difference.
        `alone`: no other process can be sending orders, so a pending trade with no order is orphaned now."""
        notes: list[str] = []

        def note(message: str) -> None:
            notes.append(message)
            log.warning("reconciliation: %s", message)

        held = self._held()  # one read of the account: settling trades does not change its positions
        now = self._broker.now()
        for trade in self._trades.active_trades():
            if trade.shadow:
                gone = ("the market's clock went back (a restarted simulator)" if trade.decided_at > now else
                        "its time limit passed while nobody followed it" if trade.deadline_at and trade.deadline_at
                        < now else None)
                if gone:
                    self._trades.cancel_trade(trade.id, gone)
                    note(f"shadow trade {trade.id} ({trade.symbol}, decided {trade.decided_at:%Y-%m-%d %H:%M}) "
                         f"canceled: {gone}")
                continue
            if trade.status == TradeStatus.PENDING and not self._sync_pending(trade, note, 0.0 if alone else None):
                continue
            self._settle_if_gone(self._trades.trade_by_order(trade.client_order_id), held, report=note)
        tracked = {t.symbol: t for t in self._trades.active_trades() if not t.shadow}
        for position in self._broker.positions():
            if position.symbol not in tracked:
                note(f"position {position.quantity:g} {position.symbol} is not a sizer trade; left alone")
            elif tracked[position.symbol].status != TradeStatus.PENDING and abs(
                    abs(position.quantity) - tracked[position.symbol].quantity) > 1e-9:
                note(f"trade {tracked[position.symbol].id} holds {tracked[position.symbol].quantity:g} "
                     f"{position.symbol} but the account holds {position.quantity:g}")
        known = {t.client_order_id for t in tracked.values()}
        for order in self._broker.open_orders():
            entry = entry_order_id(order.client_order_id) or order.client_order_id
            if order.client_order_id.startswith("sz-") and entry not in known:
                note(f"open order {order.client_order_id} ({order.side.value} {order.symbol}) belongs to no "
                     f"active trade")
        return notes

    def _sync_pending(self, trade: Trade, report: Callable[[str], None] = log.warning,
                      grace_s: float | None = None) -> bool:
        """Bring a pending trade up to its entry order's state at the broker (an event missed while down or
        disconnected); True if the trade is now open. A trade whose order the broker does not know is canceled
        once it is older than the grace period: another worker may still be sending it."""
        order = self._broker.find_order(trade.client_order_id)
        if order is None:
            if (utcnow() - trade.created_at).total_seconds() >= (self._pending_grace_s if grace_s is None else grace_s):
                reason = f"its order never reached the {self._broker.name} broker"
                self._trades.cancel_trade(trade.id, reason)
                report(f"trade {trade.id} ({trade.symbol}) canceled: {reason}")
            return False
        if order.filled_quantity > 0:
            self.on_fill(order.as_fill())
            report(f"trade {trade.id} ({trade.symbol}): entry fill of {order.filled_quantity:g} recovered")
            return True
        if not order.working:
            self.on_order_ended(OrderEnded(order.client_order_id, order.symbol, order.side, order.status, 0.0,
                                           "unnoticed", order.updated_at or self._broker.now()))
            report(f"trade {trade.id} ({trade.symbol}): entry order {order.status}, unnoticed until now")
        return False

    def _held(self) -> dict[str, float]:
        return {p.symbol: p.quantity for p in self._broker.positions()}

    def _settle_if_gone(self, trade: Trade | None, held: dict[str, float],
                        report: Callable[[str], None] | None = None) -> None:
        """An open or closing trade whose position is gone was closed while nobody listened: find how, and
        reward it. At start-up (`report` given) a trade the broker cannot explain (a restarted simulator)
        is canceled unrewarded; while running it is looked at again next poll."""
        if trade is None or trade.status not in (TradeStatus.OPEN, TradeStatus.CLOSING):
            return
        if held.get(trade.symbol, 0.0) * trade.side.sign > 0:
            return
        fill = self._broker.closing_fill(trade.symbol, trade.side.opposite, trade.opened_at)
        if fill is not None:
            if self.close(trade, fill):
                (report or log.warning)(f"trade {trade.id} ({trade.symbol}) was closed outside sizer by order "
                                        f"{fill.client_order_id} at {fill.price:g}; outcome recorded")
        elif report is not None:
            reason = f"the {self._broker.name} broker holds no position and no closing order for it"
            self._trades.cancel_trade(trade.id, reason)
            report(f"trade {trade.id} ({trade.symbol}, {trade.status}) canceled: {reason}")

    # --- every bar (simulator) or poll (real broker) ----------------------------------------------------
    def on_bar(self) -> None:
        """Mark every open trade: worst adverse excursion since entry, stops the broker does not hold,
        time limits, and positions that closed without a fill event reaching us. Trades sized 0 (shadows)
        are opened, marked and closed here on the market's prices."""
        now = self._broker.now()
        worst: dict[int, tuple[float, float]] = {}
        active = self._trades.active_trades()
        for trade in active:
            if trade.shadow:
                self._mark_shadow(trade, now, worst)
            elif trade.status == TradeStatus.PENDING:
                self._sync_pending(trade)
        open_trades = [t for t in active if t.status == TradeStatus.OPEN and not t.shadow]
        held = self._held() if open_trades else {}
        for trade in open_trades:
            if held.get(trade.symbol, 0.0) * trade.side.sign <= 0:
                self._settle_if_gone(trade, held)
                continue
            span = self._broker.price_range(trade.symbol, trade.opened_at)
            if span is not None:
                low, high = span
                price = low if trade.side is Side.BUY else high
                worst[trade.id] = (price, trade.adverse_excursion_pct(price))
                exit_reason = self._exit_level_crossed(trade, low, high)
                if exit_reason:
                    self.request_close(trade, exit_reason)
                    continue
            if trade.deadline_at is not None and now >= trade.deadline_at:
                self.request_close(trade, "time_limit")
        self._trades.update_adverse_excursions(worst)

    def _mark_shadow(self, trade: Trade, now: datetime, worst: dict[int, tuple[float, float]]) -> None:
        """A shadow opens at the first bar (or poll) after its decision, at the price it was sized at, and ends
        where a placed trade would: its stop or target within a bar (the open when the bar gapped through), or
        the last price at its time limit."""
        if trade.status == TradeStatus.PENDING:
            self._trades.mark_open(trade.id, quantity=0.0, entry_price=trade.decision_price, at=now, commission=0.0)
            return
        if trade.status != TradeStatus.OPEN:
            return
        span = self._broker.price_range(trade.symbol, trade.opened_at)
        if span is not None:
            low, high = span
            price = trade.more_adverse(low if trade.side is Side.BUY else high, trade.worst_price)
            worst[trade.id] = (price, trade.adverse_excursion_pct(price))
            hit = bracket_exit(trade.side, trade.stop_price, trade.target_price, self._last_bar(trade).open[-1],
                               high, low)
            if hit is not None:
                self._close_shadow(trade, *hit, worst=price)
                return
        if trade.deadline_at is not None and now >= trade.deadline_at:
            self._close_shadow(trade, float(self._last_bar(trade).close[-1]), "time_limit",
                               worst=worst.get(trade.id, (None,))[0])

    def _last_bar(self, trade: Trade):
        return self._broker.history(trade.symbol, 1)

    def _exit_level_crossed(self, trade: Trade, low: float, high: float) -> str | None:
        """The stop or target a broker does not hold, crossed since entry (where within the bar does not matter
        here: the exit order fills at the market)."""
        if self._broker.asset(trade.symbol).broker_stops:
            return None
        hit = bracket_exit(trade.side, trade.stop_price, trade.target_price, trade.entry_price, high, low)
        return hit[1] if hit else None

    def request_close(self, trade: Trade, reason: str) -> None:
        """Send the exit order. Idempotent: its client id derives from the trade's; an attempt the broker
        ended unfilled is followed by a fresh id. A shadow trade ends at once, at the last price."""
        if trade.shadow:
            self._close_shadow(trade, float(self._last_bar(trade).close[-1]), reason)
            return
        for attempt in range(1, EXIT_ATTEMPTS + 1):
            order = OrderRequest(
                client_order_id=exit_order_id(trade.client_order_id, attempt),
                symbol=trade.symbol,
                side=trade.side.opposite,
                quantity=trade.quantity,
                reduce_only=True,
            )
            try:
                ack = self._broker.submit(order)
            except OrderRejected as exc:  # e.g. a stop closed it first; the fill will settle the trade
                log.warning("exit of trade %s refused: %s", trade.id, exc)
                self._trades.release_exit(trade.id)
                return
            if ack.status in ("accepted", "partially_filled", "filled"):
                self._trades.mark_closing(trade.id, reason)
                return
        log.error("trade %s: %d exit orders ended unfilled; it stays open", trade.id, EXIT_ATTEMPTS)
        self._trades.release_exit(trade.id)
