"""A simulated margin broker that replays daily bars.

Market orders fill at the next bar's open with adverse slippage and a commission. Bracket legs (stop, target)
are checked against each bar's range; a bar that gaps through a level fills at the open, and when one bar
touches both levels the stop is assumed first (the conservative reading of a daily bar). Margin is
account-level, as at a real broker: gross exposure may reach `multiplier` x equity; an account whose equity
falls below the maintenance requirement is liquidated at the next open.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from backend.brokers.base import BrokerPosition, EndOfData, OrderAck, OrderRequest, OrderRejected
from backend.domain.bars import Series
from backend.domain.model import Account, AssetRules, Fill, Side, bracket_exit

if TYPE_CHECKING:  # the journal is handed in by the composition root
    from backend.store.sim_journal import SimJournal, SimSnapshot

log = logging.getLogger(__name__)


@dataclass
class _Position:
    quantity: float  # signed
    avg_entry: float
    stop: float | None = None
    target: float | None = None
    bracket_id: str | None = None  # client id of the order that opened it


class SimBroker:
    name = "sim"

    def __init__(
        self,
        series: dict[str, Series],
        *,
        start_index: int,
        initial_cash: float,
        multiplier: float = 4.0,
        shorting_enabled: bool = True,
        slippage_bps: float = 2.0,
        commission_bps: float = 1.0,
        maintenance_margin: float = 0.25,
    ) -> None:
        calendars = [s.ts for s in series.values()]
        if any(len(c) != len(calendars[0]) or (c != calendars[0]).any() for c in calendars):
            raise ValueError("simulated symbols must share one calendar")
        if not 0 <= start_index < len(calendars[0]):
            raise ValueError(f"start index {start_index} outside the data (0..{len(calendars[0]) - 1})")
        self._series = series
        self._ts = calendars[0]
        self._i = start_index
        self._initial_cash = initial_cash
        self._cash = initial_cash
        self._multiplier = multiplier
        self._shorting = shorting_enabled
        self._slip = slippage_bps / 1e4
        self._commission = commission_bps / 1e4
        self._maintenance = maintenance_margin
        self._positions: dict[str, _Position] = {}
        self._pending: dict[str, OrderRequest] = {}  # client_order_id -> order, in arrival order
        self._orders: dict[str, OrderAck] = {}
        self._lock = threading.RLock()
        self._journal: SimJournal | None = None
        self._changed: list[str] = []  # orders changed since the journal's last save

    @property
    def fingerprint(self) -> str:
        """What the account was started with: its symbols and their calendar, and the account itself."""
        return (f"{','.join(self._series)}|{self._ts[0]}..{self._ts[-1]} ({len(self._ts)} bars)|"
                f"cash {self._initial_cash:g}|x{self._multiplier:g}")

    def keep_in(self, journal: SimJournal) -> bool:
        """Keep the account in `journal` from now on, resuming the one it holds when it was started with the
        same bars and account (True): its clock, cash, positions and orders. Otherwise it starts afresh."""
        with self._lock:
            self._journal = journal
            snapshot = journal.load()
            resumed = snapshot is not None and self._resume(snapshot)
            if not resumed:
                journal.clear()
                self._changed = list(self._orders)
            self._save()
            return resumed

    def _resume(self, snapshot: SimSnapshot) -> bool:
        i = int(np.searchsorted(self._ts, np.datetime64(snapshot.bar_at.replace(tzinfo=None), "s")))
        if i >= len(self._ts) or _as_datetime(self._ts[i]) != snapshot.bar_at:
            log.warning("the saved simulated account shows %s, a bar these data do not have: starting afresh",
                        snapshot.bar_at)
            return False
        self._i, self._cash = i, snapshot.cash
        self._positions = {symbol: _Position(**p) for symbol, p in snapshot.positions.items()}
        self._orders = {cid: _ack_from_json(ack) for cid, ack, _ in snapshot.orders}
        self._pending = {cid: _request_from_json(req) for cid, _, req in snapshot.orders if req is not None}
        log.info("resumed the simulated account at %s: cash %.2f, %d positions, %d open orders", snapshot.bar_at,
                 self._cash, len(self._positions), len(self._pending))
        return True

    def _save(self) -> None:
        if self._journal is None:
            return
        seq = {cid: n for n, cid in enumerate(self._orders)}
        changed = [(cid, seq[cid], _ack_json(self._orders[cid]),
                    _request_json(self._pending[cid]) if cid in self._pending else None)
                   for cid in dict.fromkeys(self._changed)]
        self._journal.save(self.now(), self._cash, {s: asdict(p) for s, p in self._positions.items()}, changed)
        self._changed = []

    def _record(self, ack: OrderAck) -> None:
        self._orders[ack.client_order_id] = ack
        self._changed.append(ack.client_order_id)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._series)

    @property
    def calendar(self) -> np.ndarray:
        """Every bar's timestamp (datetime64[s]), the ones still to come included."""
        return self._ts

    # --- the clock -----------------------------------------------------------------------------
    @property
    def index(self) -> int:
        return self._i

    @property
    def bars_left(self) -> int:
        return len(self._ts) - 1 - self._i

    @property
    def ends_at(self) -> datetime:
        """The last bar's time."""
        return _as_datetime(self._ts[-1])

    def bars_until(self, ts: np.datetime64) -> int:
        """How many bars the clock must advance to show the last bar at or before `ts`."""
        return max(0, int(np.searchsorted(self._ts, ts, side="right")) - 1 - self._i)

    def now(self) -> datetime:
        return _as_datetime(self._ts[self._i])

    def health(self) -> str:
        if self.bars_left <= 0:
            return f"down: the data end at {self.now():%Y-%m-%d}: the simulated clock has stopped"
        return f"ok (sim, {self.now():%Y-%m-%d})"

    def advance(self) -> list[Fill]:
        """Show the next bar: fill pending orders at its open, then bracket legs within its range."""
        with self._lock:
            if self.bars_left <= 0:
                raise EndOfData(f"no bars after {self.now():%Y-%m-%d}")
            self._i += 1
            ts = self.now()
            fills: list[Fill] = []
            # exits first, so an opposite signal's close frees buying power before the new entry
            pending, self._pending = self._pending, {}
            for cid, order in sorted(pending.items(), key=lambda kv: not kv[1].reduce_only):
                fill = self._fill_market(order, ts)
                self._record(_ack(order, fill, status="canceled"))  # canceled: nothing left to reduce
                if fill:
                    fills.append(fill)
            for symbol in list(self._positions):
                fill = self._check_bracket(symbol, ts)
                if fill:
                    fills.append(fill)
            self._margin_call()
            self._save()
            return fills

    # --- the Broker port -------------------------------------------------------------------------
    def account(self) -> Account:
        with self._lock:
            gross = sum(abs(p.quantity) * self._mark(s) for s, p in self._positions.items())
            equity = self._cash + sum(p.quantity * self._mark(s) for s, p in self._positions.items())
            return Account(
                equity=equity,
                cash=self._cash,
                buying_power=max(0.0, equity * self._multiplier - gross - self._pending_notional()),
                multiplier=self._multiplier,
                shorting_enabled=self._shorting,
                gross_position_value=gross,
            )

    def account_changed(self) -> None:
        """The simulated account is always read live."""

    def prefetch(self, symbols: list[str], count: int) -> None:
        """Everything is in memory already."""

    def positions(self) -> list[BrokerPosition]:
        with self._lock:
            return [
                BrokerPosition(s, p.quantity, p.avg_entry, self._mark(s)) for s, p in self._positions.items()
            ]

    def history(self, symbol: str, count: int) -> Series:
        s = self._get_series(symbol)
        lo = max(0, self._i + 1 - count)
        hi = self._i + 1
        return Series(symbol, s.ts[lo:hi], s.open[lo:hi], s.high[lo:hi], s.low[lo:hi], s.close[lo:hi], s.volume[lo:hi])

    def asset(self, symbol: str) -> AssetRules:
        self._get_series(symbol)
        if self.bars_left <= 0:
            raise EndOfData(f"the simulated market ended at {self.now():%Y-%m-%d}: nothing new can be traded")
        return AssetRules(shortable=self._shorting)

    def price_range(self, symbol: str, since: datetime) -> tuple[float, float] | None:
        s = self._get_series(symbol)
        lo = int(np.searchsorted(s.ts, np.datetime64(since.replace(tzinfo=None), "s")))
        if lo > self._i:
            return None
        return float(s.low[lo:self._i + 1].min()), float(s.high[lo:self._i + 1].max())

    def find_order(self, client_order_id: str) -> OrderAck | None:
        return self._orders.get(client_order_id)

    def open_orders(self) -> list[OrderAck]:
        with self._lock:
            return [self._orders[cid] for cid in self._pending]

    def closing_fill(self, symbol: str, side: Side, since: datetime) -> Fill | None:
        """Every close is published as it happens; this finds one a restart came between (the account and
        its orders are kept in the journal)."""
        with self._lock:
            fills = [a for a in self._orders.values() if a.symbol == symbol and a.side is side
                     and a.filled_quantity > 0 and a.updated_at is not None and a.updated_at >= since]
        return max(fills, key=lambda a: a.updated_at).as_fill() if fills else None

    def submit(self, order: OrderRequest) -> OrderAck:
        with self._lock:
            if order.client_order_id in self._orders:
                return self._orders[order.client_order_id]
            self._get_series(order.symbol)
            if not (math.isfinite(order.quantity) and order.quantity > 0):
                raise OrderRejected(f"quantity must be a positive number, got {order.quantity}")
            held = self._positions.get(order.symbol)
            if order.reduce_only:
                if held is None or np.sign(held.quantity) != -order.side.sign:
                    raise OrderRejected(f"no {order.side.opposite.value} position in {order.symbol} to reduce")
            else:
                if order.side is Side.SELL and not self._shorting and (held is None or held.quantity <= 0):
                    raise OrderRejected("shorting is not enabled for this account")
                notional = order.quantity * self._mark(order.symbol)
                bp = self.account().buying_power
                if notional > bp:
                    raise OrderRejected(f"insufficient buying power: order ${notional:,.2f} > ${bp:,.2f}")
            ack = _ack(order, None)
            self._pending[order.client_order_id] = order
            self._record(ack)
            self._save()
            return ack

    # --- internals ---------------------------------------------------------------------------------
    def _get_series(self, symbol: str) -> Series:
        try:
            return self._series[symbol]
        except KeyError:
            raise OrderRejected(f"unknown symbol {symbol!r}; tradable: {', '.join(self._series)}") from None

    def _mark(self, symbol: str) -> float:
        return float(self._series[symbol].close[self._i])

    def _pending_notional(self) -> float:
        return sum(o.quantity * self._mark(o.symbol) for o in self._pending.values() if not o.reduce_only)

    def _execute(self, symbol: str, side: Side, qty: float, price: float, ts: datetime, cid: str, reason: str) -> Fill:
        commission = qty * price * self._commission
        self._cash -= side.sign * qty * price + commission
        pos = self._positions.get(symbol)
        signed = side.sign * qty
        if pos is None:
            self._positions[symbol] = _Position(signed, price)
        elif np.sign(pos.quantity) == np.sign(signed):
            total = pos.quantity + signed
            pos.avg_entry = (pos.avg_entry * pos.quantity + price * signed) / total
            pos.quantity = total
        else:
            remaining = pos.quantity + signed
            if abs(remaining) < 1e-12:
                del self._positions[symbol]
            elif np.sign(remaining) == np.sign(pos.quantity):
                pos.quantity = remaining
            else:  # flipped through zero: the rest opens a new position at this price
                self._positions[symbol] = _Position(remaining, price)
        return Fill(cid, symbol, side, qty, price, ts, commission, reason)

    def _fill_market(self, order: OrderRequest, ts: datetime) -> Fill | None:
        held = self._positions.get(order.symbol)
        qty = order.quantity
        if order.reduce_only:
            if held is None or np.sign(held.quantity) != -order.side.sign:
                return None  # the position is already gone (a stop beat the close): nothing to do
            qty = min(qty, abs(held.quantity))
        s = self._series[order.symbol]
        price = float(s.open[self._i]) * (1 + order.side.sign * self._slip)
        fill = self._execute(order.symbol, order.side, qty, price, ts, order.client_order_id, "market")
        pos = self._positions.get(order.symbol)
        if pos is not None and not order.reduce_only and (order.stop_price or order.target_price):
            pos.stop, pos.target, pos.bracket_id = order.stop_price, order.target_price, order.client_order_id
        return fill

    def _check_bracket(self, symbol: str, ts: datetime) -> Fill | None:
        pos = self._positions[symbol]
        if pos.stop is None and pos.target is None:
            return None
        s = self._series[symbol]
        long = pos.quantity > 0
        hit = bracket_exit(Side.BUY if long else Side.SELL, pos.stop, pos.target, float(s.open[self._i]),
                           float(s.high[self._i]), float(s.low[self._i]))
        if hit is None:
            return None
        level, reason = hit
        price = level * (1 - (1 if long else -1) * self._slip) if reason == "stop" else level
        leg = f"{pos.bracket_id}-{'sl' if reason == 'stop' else 'tp'}"
        fill = self._execute(symbol, Side.SELL if long else Side.BUY, abs(pos.quantity), price, ts, leg, reason)
        self._record(OrderAck(leg, leg, "filled", symbol, fill.side, fill.quantity, fill.price, ts, reason))
        return fill

    def _margin_call(self) -> None:
        acct = self.account()
        if acct.gross_position_value and acct.equity < self._maintenance * acct.gross_position_value:
            for symbol, pos in self._positions.items():
                side = Side.SELL if pos.quantity > 0 else Side.BUY
                cid = f"margin-call-{symbol}-{self._i}"
                self._pending[cid] = OrderRequest(cid, symbol, side, abs(pos.quantity), reduce_only=True)
                self._record(_ack(self._pending[cid], None))


def _ack(order: OrderRequest, fill: Fill | None, status: str = "accepted") -> OrderAck:
    if fill is None:
        return OrderAck(order.client_order_id, order.client_order_id, status, order.symbol, order.side)
    return OrderAck(order.client_order_id, order.client_order_id, "filled", order.symbol, order.side,
                    fill.quantity, fill.price, fill.ts)


def _as_datetime(ts: np.datetime64) -> datetime:
    return datetime.fromtimestamp(ts.astype("datetime64[s]").astype(int), tz=timezone.utc)


def _ack_json(a: OrderAck) -> dict:
    return {**asdict(a), "side": a.side.value, "updated_at": a.updated_at.isoformat() if a.updated_at else None}


def _ack_from_json(d: dict) -> OrderAck:
    at = d["updated_at"]
    return OrderAck(**{**d, "side": Side(d["side"]), "updated_at": datetime.fromisoformat(at) if at else None})


def _request_json(r: OrderRequest) -> dict:
    return {**asdict(r), "side": r.side.value}


def _request_from_json(d: dict) -> OrderRequest:
    return OrderRequest(**{**d, "side": Side(d["side"])})
