"""The trade store's hot state in Redis: one hash per symbol with an active trade, `sizer:trade:{symbol}`,
holding what the executor needs to know about it (id, status, side, quantity, client order id and the RL keys).

PostgreSQL stays the record: every trade state change writes the hash through after its commit, and the hashes
are rebuilt from the active trades when a process starts. A hash can lag behind (a process killed between its
commit and its Redis write, or Redis down at that moment), so `SqlTrades.admission` trusts only its "no
active trade" answer, which the database's one-active-trade-per-symbol index guards anyway, and confirms a
"busy" answer in PostgreSQL, repairing the hash when they differ.
"""
from __future__ import annotations

import logging

import redis

from backend.domain.trade import ACTIVE_TRADE_STATUSES, Trade

log = logging.getLogger(__name__)

FIELDS = ("id", "symbol", "status", "side", "quantity", "client_order_id", "rl_state_key", "rl_action_key")


class HotTrades:
    def __init__(self, client: redis.Redis, prefix: str = "sizer:") -> None:
        self.client, self.prefix = client, prefix

    def key(self, symbol: str) -> str:
        return f"{self.prefix}trade:{symbol}"

    def busy(self, symbol: str) -> bool | None:
        """Whether `symbol` has an active trade by its hash; None when Redis cannot say."""
        try:
            return bool(self.client.exists(self.key(symbol)))
        except redis.RedisError as exc:
            log.warning("hot state of %s unreadable (%s); asking PostgreSQL", symbol, exc)
            return None

    def sync(self, symbol: str, trade: Trade | None) -> None:
        """Write `symbol`'s hash from its trade (deleted unless the trade is active)."""
        self.sync_many({symbol: trade})

    def sync_many(self, trades: dict[str, Trade | None]) -> None:
        """`sync` for each symbol, in one round trip. A Redis error is logged, not raised: the database write it
        follows has already happened."""
        try:
            with self.client.pipeline(transaction=True) as pipe:
                for symbol, trade in trades.items():
                    self._write(pipe, symbol, trade)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("hot state of %s not written (%s); PostgreSQL has it and confirms every busy answer",
                        ", ".join(trades), exc)

    def rebuild(self, active: list[Trade]) -> None:
        """Replace every hash with the database's active trades (at start-up; Redis down is only logged)."""
        try:
            stale = set(self.client.scan_iter(self.key("*"))) - {self.key(t.symbol) for t in active}
            with self.client.pipeline(transaction=True) as pipe:
                if stale:
                    pipe.delete(*stale)
                for trade in active:
                    self._write(pipe, trade.symbol, trade)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("hot state not rebuilt (%s); PostgreSQL answers until trades change", exc)

    def _write(self, pipe, symbol: str, trade: Trade | None) -> None:
        pipe.delete(self.key(symbol))
        if trade is not None and trade.status in ACTIVE_TRADE_STATUSES:
            values = {f: getattr(trade, f) for f in FIELDS}
            pipe.hset(self.key(symbol), mapping={f: "" if v is None else str(getattr(v, "value", v))
                                                 for f, v in values.items()})
