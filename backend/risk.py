"""The risk manager: builds the sizing context, asks a policy, and applies every hard cap.

This module is the only place caps live. Each cap is a small function of (size_usd, leverage, limits)
that may only shrink the size or the leverage; a new protection is one more entry in CAPS.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

from backend.brokers.base import Broker, OrderRejected
from backend.config import Settings
from backend.domain.model import Account, AssetRules, Decision, MarketContext, Proposal, Side, Signal
from backend.domain.state import state_key
from backend.indicators import InsufficientData, min_bars, wilder_atr_adx
from backend.sizing.atr import AtrRule
from backend.sizing.base import SizingContext, SizingPolicy

log = logging.getLogger(__name__)


class SizingError(ValueError):
    """The signal cannot be sized as given; `field` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Limits:
    max_leverage: float
    max_position_usd: float
    min_position_usd: float
    max_risk_usd: float
    stop_distance_pct: float
    exposure_room_usd: float
    buying_power: float

    @staticmethod
    def of(settings: Settings, account: Account, stop_distance_pct: float, asset: AssetRules) -> "Limits":
        """Leverage is clamped to the account's multiplier; an asset that is not marginable (crypto) gets
        none, and only the buying power that unleveraged assets may use."""
        if asset.marginable:
            max_leverage, buying_power = min(settings.rm_max_leverage, account.multiplier), account.buying_power
        else:
            max_leverage = 1.0
            buying_power = min(account.buying_power, account.non_marginable_buying_power
                               if account.non_marginable_buying_power is not None else account.cash)
        return Limits(
            max_leverage=max_leverage,
            max_position_usd=settings.rm_max_position_usd,
            min_position_usd=settings.rm_min_position_usd,
            max_risk_usd=max(0.0, account.equity * settings.rm_max_risk_pct),
            stop_distance_pct=stop_distance_pct,
            exposure_room_usd=max(0.0, account.equity * settings.rm_max_exposure - account.gross_position_value),
            buying_power=max(0.0, buying_power),
        )


Cap = Callable[[float, float, Limits], tuple[float, float]]


def _cap_leverage(size: float, lev: float, lim: Limits) -> tuple[float, float]:
    if lev > lim.max_leverage:  # keep the capital committed, borrow less
        return size * lim.max_leverage / lev, lim.max_leverage
    return size, lev


CAPS: dict[str, Cap] = {
    "max_leverage": _cap_leverage,
    "max_position_usd": lambda s, lev, lim: (min(s, lim.max_position_usd), lev),
    "max_risk": lambda s, lev, lim: (min(s, lim.max_risk_usd / lim.stop_distance_pct), lev),
    "max_exposure": lambda s, lev, lim: (min(s, lim.exposure_room_usd), lev),
    "buying_power": lambda s, lev, lim: (min(s, lim.buying_power), lev),
}


def apply_caps(size: float, leverage: float, lim: Limits) -> tuple[float, float, tuple[str, ...]]:
    """Every cap in turn; returns the capped size and leverage and the names of the caps that bound."""
    bound: list[str] = []
    if not math.isfinite(size) or size < 0:
        size, bound = 0.0, ["invalid_size"]
    if not math.isfinite(leverage) or leverage < 1:
        leverage, bound = 1.0, bound + ["invalid_leverage"]
    for name, cap in CAPS.items():
        new_size, new_lev = cap(size, leverage, lim)
        if new_size < size or new_lev < leverage:
            bound.append(name)
        size, leverage = min(size, new_size), min(leverage, new_lev)
    return size, leverage, tuple(bound)


class RiskManager:
    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        win_rate: Callable[[], float | None],
        policy: SizingPolicy,
        fallback: AtrRule,
    ) -> None:
        self._s = settings
        self._broker = broker
        self._win_rate = win_rate
        self._policy = policy
        self._fallback = fallback
        self._edges = settings.bucket_edges()
        self._market_cache: dict[str, tuple[object, float, float]] = {}  # symbol -> (bar time, ATR, ADX)

    @property
    def policy(self) -> SizingPolicy:
        return self._policy

    @property
    def policy_name(self) -> str:
        return self._policy.name

    def market(self, symbol: str, price: float | None) -> MarketContext:
        period = self._s.rm_atr_period
        try:
            bars = self._broker.history(symbol, max(min_bars(period), 10 * period))
        except OrderRejected as exc:
            raise SizingError("symbol", str(exc)) from None
        if len(bars) == 0:
            raise SizingError("symbol", f"no bars for {symbol}")
        cached = self._market_cache.get(symbol)
        if cached is None or cached[0] != bars.ts[-1]:  # new bar: recompute once, then serve from memory
            try:
                cached = (bars.ts[-1], *wilder_atr_adx(bars.high, bars.low, bars.close, period))
            except InsufficientData as exc:
                raise SizingError("symbol", f"{symbol}: {exc}") from None
            self._market_cache[symbol] = cached
        _, atr, adx = cached
        return MarketContext(price=price if price is not None else float(bars.close[-1]), atr=atr, adx=adx)

    def decide(self, signal: Signal) -> Decision:
        account = self._broker.account()
        market = self.market(signal.symbol, signal.price)
        try:
            asset = self._broker.asset(signal.symbol)
        except OrderRejected as exc:
            raise SizingError("symbol", str(exc)) from None
        price = market.price
        stop = signal.stop_price
        if stop is None:
            if market.atr <= 0:
                raise SizingError("stop_price", f"{signal.symbol} has not moved for {self._s.rm_atr_period} bars "
                                                "(ATR 0): give a stop_price to size against")
            stop = price - signal.side.sign * self._s.rm_atr_stop_multiple * market.atr
        if (price - stop) * signal.side.sign <= 0:
            raise SizingError("stop_price", f"a {signal.side.value} stop must be on the losing side of {price:.4f}")
        if signal.target_price is not None and (signal.target_price - price) * signal.side.sign <= 0:
            raise SizingError(
                "target_price", f"a {signal.side.value} target must be on the winning side of {price:.4f}"
            )
        stop_pct = abs(price - stop) / price

        def reject(reason: str, proposal: Proposal | None = None) -> Decision:
            return self._decision(signal, price, stop, proposal, 0.0, 1.0, (), account.equity, approved=False,
                                  note=reason)

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

        limits = Limits.of(self._s, account, stop_pct, asset)

        def fits_caps(size: float, lev: float) -> bool:
            _, _, bound = apply_caps(size, lev, limits)
            return not bound and size >= limits.min_position_usd

        ctx = SizingContext(
            signal=signal,
            market=market,
            account=account,
            stop_distance_pct=stop_pct,
            base_size_usd=account.equity * self._s.rm_risk_per_trade_pct / stop_pct,
            state_key=state_key(
                atr_pct=market.atr_pct,
                adx=market.adx,
                confidence=signal.confidence,
                exposure=account.exposure,
                win_rate=self._win_rate(),
                edges=self._edges,
            ),
            fits_caps=fits_caps,
        )
        proposal = self._propose(ctx)
        size, lev, bound = apply_caps(proposal.size_usd, proposal.leverage, limits)
        quantity = size / price
        if not asset.fractionable:
            quantity = math.floor(quantity)
            size = quantity * price
        if size < limits.min_position_usd or quantity <= 0:
            return reject(
                f"size ${size:,.2f} after caps ({', '.join(bound) or 'none bound'}) is below the minimum "
                f"${limits.min_position_usd:,.2f}",
                proposal,
            )
        return self._decision(signal, price, stop, proposal, size, lev, bound, account.equity, approved=True,
                              quantity=quantity)

    def _propose(self, ctx: SizingContext) -> Proposal:
        if self._policy is self._fallback:
            return self._fallback.propose(ctx)
        try:
            return self._policy.propose(ctx)
        except Exception as exc:  # a broken policy must never stop trading: the rule sizes instead
            log.exception("sizing policy %s failed; ATR rule sizes this trade", self._policy.name)
            p = self._fallback.propose(ctx)
            return Proposal(p.size_usd, p.leverage, p.policy, f"{self._policy.name} failed ({exc!r}): {p.why}")

    def _decision(
        self,
        signal: Signal,
        price: float,
        stop: float,
        proposal: Proposal | None,
        size: float,
        leverage: float,
        bound: tuple[str, ...],
        equity: float,
        *,
        approved: bool,
        quantity: float = 0.0,
        note: str = "",
    ) -> Decision:
        why = proposal.why if proposal else "not sized"
        if bound:
            why += f"; capped by {', '.join(bound)}"
        if note:
            why += f"; rejected: {note}"
        return Decision(
            approved=approved,
            symbol=signal.symbol,
            side=signal.side,
            size_usd=size,
            quantity=quantity,
            leverage=leverage,
            price=price,
            stop_price=stop,
            target_price=signal.target_price,
            policy=proposal.policy if proposal else "none",
            reasoning=why,
            state_key=proposal.state_key if proposal else None,
            action_key=proposal.action_key if proposal else None,
            q_value=proposal.q_value if proposal else None,
            model_version=proposal.model_version if proposal else None,
            capped_by=bound,
            equity=equity,
        )
