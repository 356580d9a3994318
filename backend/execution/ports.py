"""What the executor and the position monitor need of storage: the trade repository (a trade with its
signal, its life and its close, which records the outcome and what it teaches in one transaction).
`backend.store.trades.SqlTrades` implements it on SQLite and PostgreSQL; tests also run an in-memory one, and
one contract suite holds all of them to the same behaviour."""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, Sequence

from backend.domain.model import Decision, Outcome, Signal
from backend.domain.rewards import Reward
from backend.domain.trade import SignalRecord, Trade, TradeStatus, utcnow
from backend.sizing.qlearning import Learning


class DuplicateSignal(Exception):
    """This signal id has been handled before."""


class SymbolBusy(Exception):
    """Another trade in this symbol is still active."""


@dataclass(frozen=True)
class NewTrade:
    """A trade to record with its signal, before its order is sent (`TradeRepository.record_trades`)."""

    signal: Signal
    decision: Decision
    client_order_id: str
    equity: float
    decided_at: datetime
    deadline_at: datetime | None

    def fields(self, status: TradeStatus) -> dict[str, Any]:
        """The recorded trade's fields, all but its id (a decision sized 0 is followed as a shadow)."""
        d = self.decision
        return dict(
            signal_id=self.signal.signal_id, client_order_id=self.client_order_id, symbol=d.symbol,
            side=d.side.value, status=status, shadow=d.skipped, quantity=d.quantity, size_usd=d.size_usd,
            leverage=d.leverage, stop_price=d.stop_price, target_price=d.target_price, deadline_at=self.deadline_at,
            policy=d.policy, rl_state_key=d.state_key, rl_action_key=d.action_key, q_value=d.q_value,
            model_version=d.model_version, arm=d.arm, equity_at_entry=self.equity, decided_at=self.decided_at,
            decision_price=d.price, entry_price=None, opened_at=None, exit_price=None, exit_reason=None,
            closed_at=None, commission_usd=0.0, pnl_usd=None, max_adverse_pct=0.0, worst_price=None, reason="",
            created_at=utcnow(),
        )


@dataclass(frozen=True)
class Close:
    """How a trade ended: the exit, its outcome and reward, and what it teaches (None: nothing to learn).
    `reported`: the entry a bot reported for a decision it traded elsewhere, stored on the trade."""

    exit_price: float
    exit_reason: str
    closed_at: datetime
    commission: float  # of the exit fill, added to the entry's
    outcome: Outcome
    reward: Reward
    learning: Learning | None
    reported: dict[str, Any] | None = None


class TradeRepository(Protocol):
    # --- signals ------------------------------------------------------------------------------------
    def signal(self, signal_id: str) -> SignalRecord | None: ...

    def admission(self, signal_id: str, symbol: str) -> tuple[SignalRecord | None, Trade | None]:
        """Before deciding: the signal if it was seen before, else the symbol's active trade."""

    def record_signal(self, signal: Signal, decision: Decision, status: str, reason: str) -> None:
        """A signal that placed no order; DuplicateSignal if its id was seen before."""

    def record_exit(self, signal: Signal, decision: Decision, trade_id: int) -> bool:
        """An opposite signal claims the exit of open trade `trade_id`; False (nothing written) if the trade is
        no longer open or another signal claimed it first; DuplicateSignal if its id was seen before."""

    # --- openings -----------------------------------------------------------------------------------
    def opening(self) -> AbstractContextManager[Any]:
        """A transaction of openings holding the opening lock (one at a time, across processes)."""

    def in_flight_notional(self, since: datetime | None = None, opening: Any = None) -> float:
        """The notional of pending trades (and, with `since`, of those opened since then); `opening`: read in
        that transaction."""

    def recent_in_flight_notional(self, since: datetime | None = None) -> float:
        """`in_flight_notional`, possibly a moment old (dropped by this process's openings)."""

    def record_trades(self, opening: Any, trades: Sequence[NewTrade]) -> list[Trade | DuplicateSignal | SymbolBusy]:
        """Each signal with its pending trade (a shadow when sized 0), in the opening's transaction."""

    def record_decision(self, signal: Signal, decision: Decision, *, client_order_id: str, equity: float,
                        decided_at: datetime) -> None:
        """A decision for a bot trading elsewhere: an EXTERNAL trade, written behind the answer."""

    def flush_decisions(self) -> None:
        """Wait until every decision recorded so far is written."""

    # --- trades -------------------------------------------------------------------------------------
    def trade_for_signal(self, signal_id: str) -> Trade | None: ...

    def trade_by_order(self, client_order_id: str) -> Trade | None: ...

    def active_trade(self, symbol: str) -> Trade | None: ...

    def active_trades(self) -> list[Trade]: ...

    def trades_held_beside(self, trade: Trade, closed_at: datetime) -> int:
        """How many other placed or followed trades were held at some time while this one was."""

    # --- its life: each move only from the statuses TRANSITIONS allows; anything else changes nothing ---------
    def mark_open(self, trade_id: int, *, quantity: float, entry_price: float, at: datetime,
                  commission: float) -> None:
        """The entry has filled `quantity` so far (cumulative): PENDING -> OPEN, or a larger fill of an OPEN one."""

    def reject_trade(self, trade_id: int, reason: str) -> None: ...

    def cancel_trade(self, trade_id: int, reason: str) -> None: ...

    def mark_closing(self, trade_id: int, reason: str) -> None: ...

    def release_exit(self, trade_id: int) -> None:
        """An exit claimed by a signal was not sent: a later signal may claim it again."""

    def reopen(self, trade_id: int, note: str) -> None:
        """CLOSING -> OPEN: its exit order ended unfilled."""

    def update_adverse_excursions(self, worst: dict[int, tuple[float, float]]) -> None:
        """Raise each trade's worst (price, percent on margin); it never goes down."""

    def close(self, trade: Trade, close: Close) -> bool:
        """CLOSED with its outcome and what it teaches, all or nothing, exactly once: False (nothing changed)
        when it was closed already or may not close."""
