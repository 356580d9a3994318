"""The multi-asset regime environment (seed 004), vectorised like env.py: state shaped (n_envs, ...), no Python
loop over environments.

One account holds cash and the two bundled indices, the S&P 500 (series 0, standing in for seed 004's SPY)
and the NASDAQ Composite (series 1, for QQQ); there is no small-cap series, so no IWM. Each action picks a
long-only target portfolio (a regime) that the account is rebalanced to at the bar's close (re-choosing the
current one rebalances its drift away, as the equal-weight benchmark does daily), or HOLD, which lets the weights
drift. HOLD is masked while the account is all in cash: there it is ALL_CASH under another name. (Masking the
current regime instead, the greedy policy alternated between two close regimes: 29% turnover a day over the
17-window walk-forward, against 3.6% with this mask.)
Every track pays `EnvConfig.cost_rate` per unit traded, as the evaluation does.

Reward per bar: the account's return after trading costs minus the return of the equal-weight portfolio of
the two indices (rebalanced daily, no cash, no costs): seed 004's alpha minus trading cost.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from backend.rl.env import EnvConfig, MarketTensors, decision_bars
from backend.rl.observation import ObservationSpec

ASSETS = ("SP500", "NASDAQ")
REGIMES = {  # target weights of (S&P 500, NASDAQ); the rest is cash
    "ALL_CASH": (0.0, 0.0),
    "ALL_SP500": (1.0, 0.0),
    "ALL_NASDAQ": (0.0, 1.0),
    "EQUAL_WEIGHT": (0.5, 0.5),
    "SP500_70_NASDAQ_30": (0.7, 0.3),
    "SP500_30_NASDAQ_70": (0.3, 0.7),
    "SP500_50_CASH_50": (0.5, 0.0),
    "NASDAQ_50_CASH_50": (0.0, 0.5),
    "EQUAL_50_CASH_50": (0.25, 0.25),
}
ACTION_NAMES = ("HOLD", *REGIMES)
HOLD = 0
ACCOUNT_FEATURES = (*(f"weight_{a}" for a in ASSETS), "window_valid")


def portfolio_step(held, target, asset_return, cost_rate: float):
    """One bar of a portfolio rebalanced at the close from weights `held` to `target` (fractions of equity
    per asset, the rest in cash at 0%), paying cost_rate per unit traded, then holding over the bar.
    Works on numpy arrays and torch tensors alike, batched over leading dimensions.

    Returns (growth of the account over the bar, drifted weights at the next close, traded / equity)."""
    traded = abs(target - held).sum(-1)
    gross = 1 + (target * asset_return).sum(-1)
    growth = (1 - cost_rate * traded) * gross
    return growth, target * (1 + asset_return) / gross[..., None], traded


def regime_spec(asset_spec: ObservationSpec) -> ObservationSpec:
    """What the regime policy sees per bar of its window: every asset's market features side by side (each
    normalised with `asset_spec`, the one per-asset definition), then the account's weights."""
    k = len(ASSETS)
    return replace(asset_spec, mean=asset_spec.mean * k, std=asset_spec.std * k, account_features=ACCOUNT_FEATURES,
                   market_features=tuple(f"{a}.{f}" for a in ASSETS for f in asset_spec.market_features))


class RegimeEnv:
    continuous = False
    action_names = ACTION_NAMES

    def __init__(self, market: MarketTensors, spec: ObservationSpec, config: EnvConfig, n_envs: int,
                 seed: int = 0, auto_reset: bool = True) -> None:
        """`market`: the two assets' bars built with the per-asset `spec`. Of `config` this uses
        initial_account_value, episode_bars, ruin_pct and cost_rate."""
        if market.close.shape[0] != len(ASSETS):
            raise ValueError(f"the regime environment trades {len(ASSETS)} series, got {market.close.shape[0]}")
        self.market, self.spec, self.cfg, self.n = market, regime_spec(spec), config, n_envs
        self.auto_reset = auto_reset
        self.device = market.features.device
        self._t_min, self._t_max = decision_bars(market, spec.window)
        self._offsets = torch.arange(-spec.window + 1, 1, device=self.device)
        self._gen = torch.Generator(device=self.device).manual_seed(seed)
        self._targets = torch.tensor([(0.0,) * len(ASSETS), *REGIMES.values()], device=self.device)
        self._env_ids = torch.arange(n_envs, device=self.device)
        z = lambda dtype=torch.float32: torch.zeros(n_envs, device=self.device, dtype=dtype)  # noqa: E731
        self.t, self.end, self.episode_length = z(torch.long), z(torch.long), z(torch.long)
        self.account, self.episode_return = z(), z()
        self.weights = torch.zeros(n_envs, len(ASSETS), device=self.device)

    def reset(self, starts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """New episodes everywhere, all in cash: at random bars, or at the given start bars."""
        self._reset(torch.ones(self.n, dtype=torch.bool, device=self.device))
        if starts is not None:
            self.t[:] = starts
            self.end[:] = torch.clamp(starts + self.cfg.episode_bars, max=self._t_max + 1)
        self._mask = self.action_mask()
        return self.observe(), self._mask

    def _reset(self, which: torch.Tensor) -> None:
        k = int(which.sum())
        start = self._t_min + torch.randint(0, self._t_max - self._t_min, (k,), generator=self._gen,
                                            device=self.device)
        self.t[which] = start
        self.end[which] = torch.clamp(start + self.cfg.episode_bars, max=self._t_max + 1)
        self.account[which] = self.cfg.initial_account_value
        self.weights[which] = 0.0
        self.episode_return[which] = 0.0
        self.episode_length[which] = 0

    def observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(n, window x assets x features + account features), of all environments or of the `rows` only."""
        t, weights = (self.t, self.weights) if rows is None else (self.t[rows], self.weights[rows])
        idx = t[:, None] + self._offsets[None, :]  # (n, window)
        window = self.market.features[:, idx].permute(1, 2, 0, 3)  # (n, window, assets, F)
        valid = self.market.valid[:, idx].all(dim=0).all(dim=1)
        return torch.cat([window.flatten(1), weights, valid[:, None].float()], dim=1)

    def action_mask(self) -> torch.Tensor:
        """(n, actions): every regime; HOLD unless the account is all in cash."""
        mask = torch.ones(self.n, len(ACTION_NAMES), dtype=torch.bool, device=self.device)
        mask[:, HOLD] = self.weights.sum(dim=1) > 0
        return mask

    def position_value(self) -> torch.Tensor:
        """Value held in the indices (gross: long only)."""
        return self.account * self.weights.sum(dim=1)

    def action_class(self, action: torch.Tensor) -> torch.Tensor:
        return action

    def action_labels(self, action: torch.Tensor) -> np.ndarray:
        return np.asarray(ACTION_NAMES)[action.cpu().numpy()]

    def step(self, action: torch.Tensor):
        """Rebalance at bar t's close, hold to bar t+1's close. Returns obs, mask, reward, terminated (ruin),
        truncated (end of the episode's window), info as SizingEnv.step does ("traded" in account currency)."""
        invalid = ~self._mask[self._env_ids, action]
        action = torch.where(invalid, HOLD, action)
        target = torch.where((action == HOLD)[:, None], self.weights, self._targets[action])
        close = self.market.close
        asset_return = (close[:, self.t + 1] / close[:, self.t]).T - 1  # (n, assets)
        growth, self.weights, traded = portfolio_step(self.weights, target, asset_return, self.cfg.cost_rate)
        reward = growth - 1 - asset_return.mean(dim=1)
        info = {"invalid": invalid, "traded": traded * self.account}
        self.account = self.account * growth
        self.t = self.t + 1

        self.episode_return += reward
        self.episode_length += 1
        terminated = self.account < self.cfg.ruin_pct * self.cfg.initial_account_value
        truncated = (self.t >= self.end) & ~terminated
        done = terminated | truncated
        if done.any():
            info.update(final_obs=self.observe(done), episode_return=self.episode_return[done].clone(),
                        episode_length=self.episode_length[done].clone(), final_account=self.account[done].clone())
            if self.auto_reset:
                self._reset(done)
        self._mask = self.action_mask()
        return self.observe(), self._mask, reward, terminated, truncated, info
