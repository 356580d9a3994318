"""The risk manager: builds the sizing context, asks a policy for an exposure, and applies every hard cap.

This module is the only place caps live. Each cap is the most notional it allows for the trade (cap_limits);
the size is the smallest of them and the policy's, and a new cap is one more entry there.
"""
from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Callable

from backend.brokers.base import OrderRejected, SizingInputs
from backend.config import RiskSettings
from backend.domain.model import Account, AssetRules, Decision, MarketContext, Proposal, Side, Signal
from backend.domain.state import BucketEdges, state_key
from backend.indicators import InsufficientData, history_bars, wilder_atr_adx
from backend.risk.trading_state import Status
from backend.sizing.ab import Arms
from backend.sizing.atr import AtrRule
from backend.sizing.base import SizingContext, SizingPolicy

log = logging.getLogger(__name__)
MIN_STOP_DISTANCE = 1e-4  # of the price: a closer stop would size without bound against the risk cap


class SizingError(ValueError):
    """The signal cannot be sized as given; `field` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def cap_limits(risk: RiskSettings, account: Account, stop_distance_pct: float, asset: AssetRules,
               in_flight: float = 0.0) -> dict[str, float]:
    """The most notional (USD) each cap allows for one new trade. Caps are fractions of equity, so they grow and
    shrink with the account; RM_MAX_POSITION_USD is an optional fixed ceiling. Leverage (notional / equity) is
    clamped to the account's multiplier; an asset that is not marginable (crypto) gets none, and only the
    buying power that unleveraged assets may use. `in_flight`: the notional of entry orders the account's
    positions do not show yet; gross exposure counts it, and so does the buying power of a cached account (a
    live one already has)."""
    equity = account.equity
    if asset.marginable:
        max_leverage, buying_power = min(risk.max_leverage, account.multiplier), account.buying_power
    else:
        max_leverage = 1.0
        buying_power = min(account.buying_power, account.non_marginable_buying_power
                           if account.non_marginable_buying_power is not None else account.cash)
    limits = {
        "max_leverage": max_leverage * equity,
        "max_position": risk.max_position_exposure * equity,
        "max_risk": risk.max_risk_pct * equity / stop_distance_pct,
        "max_exposure": risk.max_exposure * equity - account.gross_position_value - in_flight,
        "buying_power": buying_power - (in_flight if account.as_of is not None else 0.0),
    }
    if risk.max_position_usd is not None:
        limits["max_position_usd"] = risk.max_position_usd
    return {name: (limit + abs(limit)) / 2 for name, limit in limits.items()}  # max(0, limit), tensors too


def apply_caps(size: float, limits: dict[str, float]) -> tuple[float, tuple[str, ...]]:
    """The notional after every cap, and the names of the caps that bound. Caps only ever shrink a size."""
    bound = [name for name, limit in limits.items() if not size <= limit]
    if not math.isfinite(size) or size < 0:
        return 0.0, ("invalid_size",)
    return min(size, *limits.values()), tuple(bound)


class RiskManager:
    def __init__(
        self,
        risk: RiskSettings,
        edges: BucketEdges,
        broker: SizingInputs,
        win_rate: Callable[[], float | None],
        policy: SizingPolicy,
        fallback: AtrRule,
        trading_status: Callable[[], Status],
        in_flight: Callable[[datetime | None], float],
        arms: Arms | None = None,
    ) -> None:
        self._s = risk
        self._broker = broker
        self._win_rate = win_rate
        self._trading_status = trading_status
        self._in_flight = in_flight
        self._policy = policy
        self._fallback = fallback
        self._arms = arms  # a live A/B test: each signal is sized by the arm it is assigned to
        self._edges = edges
        self._market_cache: dict[str, tuple[object, float, float]] = {}  # symbol -> (bar time, ATR, ADX)

    @property
    def policy(self) -> SizingPolicy:
        return self._policy

    @property
    def policy_name(self) -> str:
        return self._policy.name

    @property
    def bars_needed(self) -> int:
        """The bars a decision reads: enough for Wilder's ATR and ADX to settle."""
        return history_bars(self._s.atr_period)

    def prefetch(self, symbols: list[str]) -> None:
        """Load what deciding these symbols reads, in a few broker requests (a worker's batch of signals)."""
        self._broker.prefetch(symbols, self.bars_needed)

    def market(self, symbol: str, price: float | None) -> MarketContext:
        """The symbol's market at its last completed bar: price, ATR and ADX. A caller's `price` is only checked
        against the market's (a stale or mistyped price must not move any cap or stop); it is never used."""
        try:
            bars = self._broker.history(symbol, self.bars_needed)
        except OrderRejected as exc:
            raise SizingError("symbol", str(exc)) from None
        if len(bars) == 0:
            raise SizingError("symbol", f"no bars for {symbol}")
        cached = self._market_cache.get(symbol)
        if cached is None or cached[0] != bars.ts[-1]:  # new bar: recompute once, then serve from memory
            try:
                cached = (bars.ts[-1], *wilder_atr_adx(bars.high, bars.low, bars.close, self._s.atr_period))
            except InsufficientData as exc:
                raise SizingError("symbol", f"{symbol}: {exc}") from None
            self._market_cache[symbol] = cached
        _, atr, adx = cached
        market_price = float(bars.close[-1])
        if price is not None and not abs(price / market_price - 1) <= self._s.max_price_deviation:
            raise SizingError("price", f"price {price:.6g} is {abs(price / market_price - 1):.1%} away from "
                                       f"{symbol}'s market price {market_price:.6g} (RM_MAX_PRICE_DEVIATION "
                                       f"{self._s.max_price_deviation:.0%}); sizing uses the market's price")
        return MarketContext(price=market_price, atr=atr, adx=adx)

    def check(self, signal: Signal) -> tuple[MarketContext, float, float]:
        """The checks of the input that `decide` makes, without sizing: SizingError unless the symbol has bars,
        a price given is near the market's, and the stop (given, or ATR-based) and the target are on their sides
        of the price, the stop far enough. Returns the market, the stop and its distance (a fraction of the
        price). The API checks a signal with it before queueing it for the workers."""
        market = self.market(signal.symbol, signal.price)
        price = market.price
        stop = signal.stop_price
        if stop is None:
            if market.atr <= 0:
                raise SizingError("stop_price", f"{signal.symbol} has not moved for {self._s.atr_period} bars "
                                                "(ATR 0): give a stop_price to size against")
            stop = price - signal.side.sign * self._s.atr_stop_multiple * market.atr
        if (price - stop) * signal.side.sign <= 0:
            raise SizingError("stop_price", f"a {signal.side.value} stop must be on the losing side of {price:.4f}")
        if signal.target_price is not None and (signal.target_price - price) * signal.side.sign <= 0:
            raise SizingError(
                "target_price", f"a {signal.side.value} target must be on the winning side of {price:.4f}"
            )
        stop_pct = abs(price - stop) / price
        if stop_pct < MIN_STOP_DISTANCE:
            raise SizingError("stop_price", f"a stop {stop_pct:.4%} from the price {price:.6g} is no stop: it must be "
                                            f"at least {MIN_STOP_DISTANCE:.2%} away")
        return market, stop, stop_pct

    def decide(self, signal: Signal, in_flight: Callable[[datetime | None], float] | None = None) -> Decision:
        """`in_flight`: how the in-flight notional is read: by default the recent figure
        (TradeRepository.recent_in_flight_notional); under the opening lock, afresh in its transaction (`confirm`)."""
        arm, policy = self._arms.assign(signal) if self._arms else (None, self._policy)  # before anything is read
        account = self._broker.account()
        market, stop, stop_pct = self.check(signal)
        try:
            asset = self._broker.asset(signal.symbol)
        except OrderRejected as exc:
            raise SizingError("symbol", str(exc)) from None
        price = market.price

        def reject(reason: str) -> Decision:
            return self._decision(signal, price, stop, None, None, 0.0, (), account.equity, approved=False, arm=arm,
                                  note=f"rejected: {reason}")

        if account.equity <= 0:
            return reject(f"account equity is {account.equity:.2f}: nothing can be risked")
        if not asset.tradable:
            return reject(f"{signal.symbol} is not tradable at the {self._broker.name} broker")
        if not asset.market_open:
            return reject(f"the market for {signal.symbol} is closed")
        if signal.side is Side.SELL and not account.shorting_enabled:
            return reject("the account may not sell short")
        if signal.side is Side.SELL and not asset.shortable:
            return reject(f"{signal.symbol} may not be sold short")

        equity = account.equity
        limits = cap_limits(self._s, account, stop_pct, asset, (in_flight or self._in_flight)(account.as_of))
        status = self._trading_status()
        if not status.allows_entries:  # no new exposure: sized and followed as a shadow, so learning goes on
            limits["trading_state"] = 0.0
        win_rate = self._win_rate()
        ctx = SizingContext(
            signal=signal,
            market=market,
            account=account,
            stop_distance_pct=stop_pct,
            state_key=state_key(
                atr_pct=market.atr_pct,
                adx=market.adx,
                confidence=signal.confidence,
                exposure=account.exposure,
                win_rate=win_rate,
                edges=self._edges,
            ),
            max_exposure=min(limits.values()) / equity,
            min_exposure=self._s.min_position_usd / equity,
            atr_exposure=self._s.risk_per_trade_pct / stop_pct,
            win_rate=win_rate,
        )
        proposal = self._propose(ctx, policy)
        size, bound = apply_caps(proposal.exposure * equity, limits)
        quantity = size / price
        if not asset.fractionable:
            quantity = math.floor(quantity)
            size = quantity * price
        if size < self._s.min_position_usd or quantity <= 0:
            reason = ("the policy skips it" if proposal.exposure == 0 else
                      f"trading state {status.state.value} ({status.cause}: {status.reason})"
                      if "trading_state" in bound else
                      f"size ${size:,.2f} after caps ({', '.join(bound) or 'none bound'}) is below the minimum "
                      f"${self._s.min_position_usd:,.2f}")
            return self._decision(signal, price, stop, proposal, ctx.state_key, 0.0, bound, equity, arm=arm,
                                  approved=False, skipped=True, note=f"sized 0: {reason}; followed without an order")
        return self._decision(signal, price, stop, proposal, ctx.state_key, size, bound, equity, arm=arm,
                              approved=True, quantity=quantity)

    def confirm(self, signal: Signal, decision: Decision, in_flight: Callable[[datetime | None], float]) -> Decision:
        """`decision` as it stands if its size still fits the caps with the in-flight notional read now (under the
        opening lock, after the openings decided meanwhile), else `signal` decided again with it."""
        account = self._broker.account()
        stop_pct = abs(decision.price - decision.stop_price) / decision.price
        limits = cap_limits(self._s, account, stop_pct, self._broker.asset(signal.symbol), in_flight(account.as_of))
        return decision if decision.size_usd <= min(limits.values()) else self.decide(signal, in_flight)

    def _propose(self, ctx: SizingContext, policy: SizingPolicy) -> Proposal:
        if policy is self._fallback:
            return self._fallback.propose(ctx)
        try:
            return policy.propose(ctx)
        except Exception as exc:  # a broken policy must never stop trading: the rule sizes instead
            log.exception("sizing policy %s failed; ATR rule sizes this trade", policy.name)
            p = self._fallback.propose(ctx)
            return Proposal(p.exposure, p.policy, f"{policy.name} failed ({exc!r}): {p.why}")

    def _decision(
        self,
        signal: Signal,
        price: float,
        stop: float,
        proposal: Proposal | None,
        state: str | None,
        size: float,
        bound: tuple[str, ...],
        equity: float,
        *,
        approved: bool,
        skipped: bool = False,
        quantity: float = 0.0,
        note: str = "",
        arm: str | None = None,
    ) -> Decision:
        why = proposal.why if proposal else "not sized"
        if arm:
            why = f"A/B arm {arm}: {why}"
        if bound:
            why += f"; capped by {', '.join(bound)}"
        if note:
            why += f"; {note}"
        exposure = size / equity if equity > 0 else 0.0
        return Decision(
            approved=approved,
            symbol=signal.symbol,
            side=signal.side,
            size_usd=size,
            quantity=quantity,
            leverage=max(1.0, exposure),
            price=price,
            stop_price=stop,
            target_price=signal.target_price,
            policy=proposal.policy if proposal else "none",
            reasoning=why,
            state_key=state,
            action_key=proposal.action_key if proposal else None,
            q_value=proposal.q_value if proposal else None,
            model_version=proposal.model_version if proposal else None,
            capped_by=bound,
            equity=equity,
            exposure=exposure,
            skipped=skipped,
            arm=arm,
        )
