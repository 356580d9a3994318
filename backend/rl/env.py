"""The sizing environment, vectorised: every piece of state is a tensor of shape (n_envs, ...) on one device,
and no Python loop runs over environments.

Seven actions: HOLD, BUY 25/50/75%, SELL 25/50/75% of a base allocation (seed 000): the base is
`base_alloc` of the account value left after the safety buffer, a position may not exceed `max_position_pct`
of the account, and a full position is reached by scaling in over repeated actions. An action chosen after
bar t's close fills at bar t+1's open with slippage and commission; the reward is the account's change over
that bar (position-scaled return) or its log. Episodes start at random offsets and end on ruin or at the end
of their window. Action masks come from here and are used in training and at inference alike.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from backend.domain.bars import Series
from backend.rl.observation import ObservationSpec, account_features, market_features, normalise

HOLD, BUY_25, BUY_50, BUY_75, SELL_25, SELL_50, SELL_75 = range(7)
N_ACTIONS = 7
ACTION_NAMES = ("HOLD", "BUY_25", "BUY_50", "BUY_75", "SELL_25", "SELL_50", "SELL_75")
DIRECTION = (0, 1, 1, 1, -1, -1, -1)
SIZE = (0.0, 0.25, 0.50, 0.75, 0.25, 0.50, 0.75)
LEGACY_3_TO_7 = (HOLD, BUY_50, SELL_50)  # seed 000: a 3-action model's HOLD/BUY/SELL


@dataclass(frozen=True)
class EnvConfig:
    initial_account_value: float = 1000.0
    """Starting account value of every episode, USD."""
    safety_buffer_pct: float = 0.30
    """Fraction of the account never put at risk."""
    base_alloc: float = 0.15
    """Fraction of the available (post-buffer) account one 100% action would commit."""
    max_position_pct: float = 0.20
    """Largest position, as a fraction of the account value."""
    allow_short: bool = False
    """Whether SELL may open or grow a short position (otherwise it only reduces a long)."""
    commission_bps: float = 1.0
    """Commission per fill, basis points of the traded value."""
    slippage_bps: float = 2.0
    """Adverse slippage per fill, basis points of the price."""
    reward: Literal["scaled_return", "log_growth"] = "scaled_return"
    """scaled_return: account change / account (seed 000); log_growth: its log."""
    episode_bars: int = 252
    """Longest episode, in bars (an episode also ends at its data's end)."""
    ruin_pct: float = 0.5
    """An episode ends when the account falls below this fraction of its start."""
    hold_threshold: float = 0.1
    """Continuous actions (seed 003): a smoothed action within +-hold_threshold is a HOLD."""
    smoothing_window: int = 3
    """Continuous actions: the action played is the mean of the last this-many actions."""
    min_trade_value: float = 0.0
    """Orders smaller than this (USD) are not placed (seed 003's continuous environment uses 25)."""

    @property
    def cost_rate(self) -> float:
        """Slippage plus commission per unit traded: what every track in the evaluation pays."""
        return (self.commission_bps + self.slippage_bps) / 1e4


@dataclass(frozen=True)
class MarketTensors:
    """Normalised feature windows and prices of S series aligned on one calendar, on one device."""

    features: torch.Tensor  # (S, T, F)
    valid: torch.Tensor  # (S, T) every feature of the row defined
    open: torch.Tensor  # (S, T)
    close: torch.Tensor  # (S, T)

    @staticmethod
    def build(series: list[Series], spec: ObservationSpec, device: str | torch.device = "cpu",
              start: np.datetime64 | None = None, end: np.datetime64 | None = None) -> "MarketTensors":
        """Features are computed over each series' whole history (causal: a row sees only the past), then the
        rows from `start` to `end` (inclusive) are kept: a held-out window needs no warm-up of its own."""
        ts = series[0].ts
        rows = slice(int(np.searchsorted(ts, start)) if start is not None else 0,
                     int(np.searchsorted(ts, end, side="right")) if end is not None else len(ts))
        raw = [market_features(s.open, s.high, s.low, s.close, s.volume)[rows] for s in series]
        to = lambda x: torch.as_tensor(np.stack(x), device=device)  # noqa: E731
        return MarketTensors(
            features=to([normalise(spec, r) for r in raw]),
            valid=to([np.all(np.isfinite(r), axis=1) for r in raw]),
            open=to([s.open[rows] for s in series]).float(),
            close=to([s.close[rows] for s in series]).float(),
        )


def decision_bars(market: MarketTensors, window: int) -> tuple[int, int]:
    """The first bar whose whole window is defined on every series, and the last that still has a next bar."""
    t_count = market.close.shape[1]
    complete = market.valid.all(dim=0)
    t_min = (int(torch.nonzero(complete)[0]) if complete.any() else t_count) + window - 1
    if t_count - 2 - t_min < 2:
        raise ValueError(f"the data holds {t_count} bars: too few for a window of {window} and warm-up")
    return t_min, t_count - 2


class SizingEnv:
    continuous = False  # discrete actions, masked
    action_names = ACTION_NAMES

    def __init__(self, market: MarketTensors, spec: ObservationSpec, config: EnvConfig, n_envs: int,
                 seed: int = 0, auto_reset: bool = True) -> None:
        """auto_reset: finished environments start a new episode inside step() (training); False leaves them
        in their terminal state until reset() (a single-episode view such as gymnasium's)."""
        self.market, self.spec, self.cfg, self.n = market, spec, config, n_envs
        self.auto_reset = auto_reset
        self.device = market.features.device
        self._t_min, self._t_max = decision_bars(market, spec.window)
        self._offsets = torch.arange(-spec.window + 1, 1, device=self.device)
        self._gen = torch.Generator(device=self.device).manual_seed(seed)
        self._sizes = torch.tensor(SIZE, device=self.device)
        self._dirs = torch.tensor(DIRECTION, device=self.device, dtype=torch.float32)
        self._env_ids = torch.arange(n_envs, device=self.device)
        z = lambda dtype=torch.float32: torch.zeros(n_envs, device=self.device, dtype=dtype)  # noqa: E731
        self.series, self.t, self.end = z(torch.long), z(torch.long), z(torch.long)
        self.cash, self.units, self.account = z(), z(), z()
        self.episode_return, self.episode_length = z(), z(torch.long)

    # --- episodes ------------------------------------------------------------------------------
    def reset(self, starts: torch.Tensor | None = None, series: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """New episodes everywhere: at random offsets, or at the given start bars (and series) for a
        reproducible evaluation."""
        self._reset(torch.ones(self.n, dtype=torch.bool, device=self.device))
        if starts is not None:
            self.t[:] = starts
            self.end[:] = torch.clamp(starts + self.cfg.episode_bars, max=self._t_max + 1)
        if series is not None:
            self.series[:] = series
        self._mask = self.action_mask()
        return self.observe(), self._mask

    def _reset(self, which: torch.Tensor) -> None:
        k = int(which.sum())
        if k == 0:
            return
        s_count = self.market.features.shape[0]
        span = self._t_max - self._t_min
        start = self._t_min + torch.randint(0, span, (k,), generator=self._gen, device=self.device)
        self.series[which] = torch.randint(0, s_count, (k,), generator=self._gen, device=self.device)
        self.t[which] = start
        self.end[which] = torch.clamp(start + self.cfg.episode_bars, max=self._t_max + 1)
        self.cash[which] = self.cfg.initial_account_value
        self.units[which] = 0.0
        self.account[which] = self.cfg.initial_account_value
        self.episode_return[which] = 0.0
        self.episode_length[which] = 0

    # --- what the agent sees and may do --------------------------------------------------------------
    def _price(self, table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return table[self.series, t]

    def position_value(self) -> torch.Tensor:
        return self.units * self._price(self.market.close, self.t)

    def cash_available(self) -> torch.Tensor:
        return self.cash - self.cfg.safety_buffer_pct * self.account

    def observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Observations of all environments, or of the `rows` (a bool mask) only."""
        series, t = (self.series, self.t) if rows is None else (self.series[rows], self.t[rows])
        idx = t[:, None] + self._offsets[None, :]  # (n, window)
        window = self.market.features[series[:, None], idx]  # (n, window, F)
        valid = self.market.valid[series[:, None], idx].all(dim=1)
        pick = (lambda x: x) if rows is None else (lambda x: x[rows])  # noqa: E731
        acct = account_features(pick(self.position_value()), pick(self.account), pick(self.cash_available()),
                                self.cfg.initial_account_value, self.cfg.max_position_pct, valid)
        return torch.cat([window.flatten(1), acct], dim=1)

    def action_mask(self) -> torch.Tensor:
        return action_mask(self.position_value(), self.account, self.cash_available(), self.cfg)

    def action_class(self, action: torch.Tensor) -> torch.Tensor:
        """The action as one of the 7 named decisions (for the collapse monitor and reports)."""
        return action

    def action_labels(self, action: torch.Tensor) -> np.ndarray:
        return np.asarray(self.action_names)[self.action_class(action).cpu().numpy()]

    def _order(self, action: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(direction, dollars, invalid) of the order an action asks for, given the position's value at the
        fill price: a masked action is reported as invalid and played as HOLD."""
        invalid = ~self._mask[self._env_ids, action]
        action = torch.where(invalid, torch.zeros_like(action), action)
        return self._dirs[action], base_dollars(self.account, self.cfg) * self._sizes[action], invalid

    # --- one bar ------------------------------------------------------------------------------------------
    def step(self, action: torch.Tensor):
        """Returns obs, mask, reward, terminated (ruin), truncated (end of the episode's window), info.

        info: "invalid" (the action was masked and played as HOLD), "traded" (value filled, USD) and, for the
        environments that finished, "final_obs" (their terminal observations, for bootstrapping truncated
        episodes), "episode_return", "episode_length", "final_account"."""
        cfg = self.cfg
        next_t = self.t + 1
        open_next = self._price(self.market.open, next_t)
        value = self.units * open_next
        direction, dollars, invalid = self._order(action, value)
        cap = cfg.max_position_pct * self.account
        low = -cap if cfg.allow_short else torch.minimum(value, torch.zeros_like(value))
        high = torch.maximum(cap, value)  # a position grown by prices is never force-sold by a BUY
        target = torch.clamp(value + direction * dollars, min=low, max=high)
        target = torch.where(direction > 0, torch.maximum(target, value), target)
        target = torch.where(direction < 0, torch.minimum(target, value), target)
        delta_value = target - value
        buy_room = self.cash_available().clamp_min(0) / (1 + (cfg.slippage_bps + cfg.commission_bps) / 1e4)
        delta_value = torch.where(delta_value > 0, torch.minimum(delta_value, buy_room), delta_value)
        delta_value = torch.where(delta_value.abs() < cfg.min_trade_value, 0.0, delta_value)

        delta_units = delta_value / open_next
        fill = open_next * (1 + torch.sign(delta_units) * cfg.slippage_bps / 1e4)
        traded = delta_units.abs() * fill
        self.cash = self.cash - delta_units * fill - traded * cfg.commission_bps / 1e4
        self.units = self.units + delta_units
        self.t = next_t
        new_account = self.cash + self.units * self._price(self.market.close, self.t)
        ratio = (new_account / self.account).clamp_min(1e-6)
        reward = torch.log(ratio) if cfg.reward == "log_growth" else ratio - 1
        self.account = new_account

        self.episode_return += reward
        self.episode_length += 1
        terminated = self.account < cfg.ruin_pct * cfg.initial_account_value
        truncated = (self.t >= self.end) & ~terminated
        done = terminated | truncated
        info = {"invalid": invalid, "traded": traded}
        if done.any():
            info.update(
                final_obs=self.observe(done),
                episode_return=self.episode_return[done].clone(),
                episode_length=self.episode_length[done].clone(),
                final_account=self.account[done].clone(),
            )
            if self.auto_reset:
                self._reset(done)
        self._mask = self.action_mask()
        return self.observe(), self._mask, reward, terminated, truncated, info


@functools.cache
def _buy_sizes(device: torch.device) -> torch.Tensor:
    return torch.tensor(SIZE[1:4], device=device)


def base_dollars(account: torch.Tensor, cfg: EnvConfig) -> torch.Tensor:
    """What a 100% action would trade: base_alloc of the account left after the safety buffer."""
    return account * (1 - cfg.safety_buffer_pct) * cfg.base_alloc


def action_mask(position_value: torch.Tensor, account: torch.Tensor, cash_available: torch.Tensor,
                cfg: EnvConfig) -> torch.Tensor:
    """(..., 7) bool: HOLD always; BUY needs room below the position cap and the cash for that size; SELL needs
    a long to reduce, or shorting allowed and room below the short cap. The same rule serves live decisions."""
    dollars = base_dollars(account, cfg)[..., None] * _buy_sizes(account.device)
    cap = (cfg.max_position_pct * account)[..., None]
    pos = position_value[..., None]
    eps = 1e-6 * account[..., None]
    covering = pos < 0
    buy = covering | ((pos < cap - eps) & (cash_available[..., None] >= dollars))
    sell = (pos > eps) | (cfg.allow_short & (pos > -cap + eps)).expand_as(pos)
    hold = torch.ones_like(pos, dtype=torch.bool)
    return torch.cat([hold, buy, sell.expand_as(buy)], dim=-1)


class ContinuousSizingEnv(SizingEnv):
    """Box(-1, 1) actions (seed 003) on the same account simulation: the action played is the mean of the last
    `smoothing_window` actions; within +-hold_threshold it is a HOLD; above, BUY that fraction of the base
    allocation (a 100% discrete BUY); below, SELL that fraction of the position. Orders under
    `min_trade_value` are skipped. Every action is valid: the mask is a single True column."""

    continuous = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._recent = torch.zeros(self.n, self.cfg.smoothing_window, device=self.device)
        # the action played is the mean of the new one and these earlier ones: the policy must see them
        lags = tuple(f"action_lag_{k}" for k in range(self.cfg.smoothing_window - 1, 0, -1))
        self.spec = replace(self.spec, account_features=self.spec.account_features + lags)

    def observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        recent = self._recent if rows is None else self._recent[rows]
        return torch.cat([super().observe(rows), recent[:, 1:]], dim=1)

    def _reset(self, which: torch.Tensor) -> None:
        super()._reset(which)
        self._recent[which] = 0.0

    def action_mask(self) -> torch.Tensor:
        return torch.ones(self.n, 1, dtype=torch.bool, device=self.device)

    def action_class(self, action: torch.Tensor) -> torch.Tensor:
        """HOLD within the threshold, else BUY/SELL 25/50/75 by the third of (threshold, 1] it falls in."""
        a = action.clamp(-1.0, 1.0)
        thr = self.cfg.hold_threshold
        third = ((a.abs() - thr) / (1 - thr) * 3).clamp(0, 2).long()  # 0, 1, 2
        return torch.where(a.abs() <= thr, HOLD, torch.where(a > 0, BUY_25 + third, SELL_25 + third))

    def _order(self, action: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._recent = torch.cat([self._recent[:, 1:], action.clamp(-1.0, 1.0)[:, None]], dim=1)
        a = self._recent.mean(dim=1)
        a = torch.where(a.abs() <= self.cfg.hold_threshold, 0.0, a)
        dollars = torch.where(a > 0, a * base_dollars(self.account, self.cfg), -a * value.abs())
        return torch.sign(a), dollars, torch.zeros_like(a, dtype=torch.bool)
