"""A single-environment gymnasium view over the vectorised `SizingEnv`, for gymnasium / stable-baselines3 tools.

The market and account simulation is `SizingEnv`'s own (n_envs=1, on the CPU); this module only adapts its
interface:

- `reset(seed=None, options=None) -> (obs, info)`: obs is a float32 numpy array of shape (spec.size,). A seed
  re-creates the inner environment with that seed (its torch Generator picks the start offsets), so
  `reset(seed=s)` and the unseeded resets that follow it are reproducible.
- `step(action) -> (obs, reward, terminated, truncated, info)`: terminated = ruin (account below
  `ruin_pct` of the initial value, checked first), truncated = the end of the episode window (`episode_bars`
  or the data's end) without ruin. A masked-out action is treated as HOLD, exactly as `SizingEnv.step` does,
  and reported as `info["invalid"]` (`info["action"]` is the action actually taken).
- `action_masks() -> np.ndarray[bool] (7,)`: the actions allowed in the current state (the method name
  sb3-contrib's MaskablePPO looks for).

Terminal observations. The inner `SizingEnv` is built with `auto_reset=False`: a finished episode stays in
its terminal state (its last bar, final cash/position/account), so the final `step()` returns the true terminal
observation (SB3 stores it as `terminal_observation` and bootstraps truncated episodes from it), and the next
episode begins only when `reset()` is called.

Observation bounds hold by construction: market features are z-scores clipped to +-CLIP with undefined values
set to 0 (`observation.normalise`); position_pct is in [-1, 1]; available_pct, has_position and window_valid
are in [0, 1]; account_change = log10(max(account, 1e-9) / initial) lies between log10(1e-9 / initial) and
log10(float32 max / initial), widened by 1 on each side.
"""
from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from backend.rl.env import HOLD, N_ACTIONS, EnvConfig, MarketTensors, SizingEnv
from backend.rl.observation import ACCOUNT_FEATURES, CLIP, ObservationSpec


def _observation_bounds(spec: ObservationSpec, config: EnvConfig) -> tuple[np.ndarray, np.ndarray]:
    n_market = spec.window * len(spec.market_features)
    per_account = {
        "position_pct": (-1.0, 1.0),
        "available_pct": (0.0, 1.0),
        "account_change": (np.floor(np.log10(1e-9 / config.initial_account_value)) - 1.0,
                           np.ceil(np.log10(float(np.finfo(np.float32).max) / config.initial_account_value)) + 1.0),
        "has_position": (0.0, 1.0),
        "window_valid": (0.0, 1.0),
    }
    if tuple(spec.account_features) != tuple(per_account) or tuple(spec.account_features) != ACCOUNT_FEATURES:
        raise ValueError(f"unknown account features {spec.account_features}: update _observation_bounds")
    low = np.concatenate([np.full(n_market, -CLIP), [b[0] for b in per_account.values()]]).astype(np.float32)
    high = np.concatenate([np.full(n_market, CLIP), [b[1] for b in per_account.values()]]).astype(np.float32)
    return low, high


class SizingGymEnv(gymnasium.Env):
    """One sizing environment as a `gymnasium.Env` (see the module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, market: MarketTensors, spec: ObservationSpec, config: EnvConfig, seed: int = 0) -> None:
        super().__init__()
        if market.features.device.type != "cpu":
            market = MarketTensors(*(t.cpu() for t in (market.features, market.valid, market.open, market.close)))
        # not `self.spec`: gymnasium.Env.spec is the registration EnvSpec that gymnasium tools read
        self.market, self.obs_spec, self.config = market, spec, config
        self._seed = seed
        self._env = SizingEnv(market, spec, config, n_envs=1, seed=seed, auto_reset=False)
        low, high = _observation_bounds(spec, config)
        self.observation_space = spaces.Box(low=low, high=high, shape=(spec.size,), dtype=np.float32)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self._mask: torch.Tensor | None = None  # (1, 7) of the current state; None before the first reset
        self._finished = False

    @property
    def inner(self) -> SizingEnv:
        """The wrapped one-environment `SizingEnv` (its state: t, end, cash, units, account...)."""
        return self._env

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._seed = int(seed)
            self._env = SizingEnv(self.market, self.obs_spec, self.config, n_envs=1, seed=self._seed,
                                  auto_reset=False)
        obs, mask = self._env.reset()
        self._mask, self._finished = mask, False
        return self._obs(obs), self._info()

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._mask is None or self._finished:
            raise RuntimeError("step() called before reset() or after the episode ended: call reset()")
        a = int(action)
        if not 0 <= a < N_ACTIONS:
            raise ValueError(f"action {action!r} outside 0..{N_ACTIONS - 1}")
        obs, mask, reward, term, trunc, info = self._env.step(torch.tensor([a], dtype=torch.long))
        invalid = bool(info["invalid"][0])
        terminated, truncated = bool(term[0]), bool(trunc[0])
        done = term | trunc
        self._mask, self._finished = mask, bool(done[0])
        extra: dict[str, Any] = {"invalid": invalid, "action": HOLD if invalid else a}
        if self._finished:
            extra.update(episode_return=float(info["episode_return"][0]),
                         episode_length=int(info["episode_length"][0]),
                         final_account=float(info["final_account"][0]))
        return self._obs(obs), float(reward[0]), terminated, truncated, self._info(**extra)

    def action_masks(self) -> np.ndarray:
        """(7,) bool: the actions allowed in the current state (HOLD always)."""
        if self._mask is None:
            raise RuntimeError("action_masks() called before reset()")
        return self._mask[0].numpy().copy()

    # --- helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def _obs(obs: torch.Tensor) -> np.ndarray:
        return obs[0].numpy().astype(np.float32, copy=True)

    def _info(self, **extra: Any) -> dict[str, Any]:
        env = self._env
        return {"t": int(env.t[0]), "end": int(env.end[0]), "account": float(env.account[0]),
                "action_mask": self.action_masks(), **extra}
