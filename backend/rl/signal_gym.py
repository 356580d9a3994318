"""A single-environment gymnasium view over the vectorised `SignalSizingEnv` (as `gym_env` is over `SizingEnv`),
for gymnasium / stable-baselines3 tools such as sb3-contrib's MaskablePPO.

- `reset(seed=None, options=None) -> (obs, info)`: a seed re-creates the inner environment with it (its torch
  Generator picks the episodes' first signals), so the unseeded resets that follow are reproducible.
- `step(action) -> (obs, reward, terminated, truncated, info)`: reward = the trade's log growth at the chosen
  menu exposure; truncated at the episode's last signal (never terminated), with that signal's observation as
  the terminal one. A masked exposure is played as a skip, as `SignalSizingEnv.step` does (`info["invalid"]`).
- `action_masks() -> np.ndarray[bool] (menu size,)`: what the caps allow now (the name MaskablePPO looks for).
"""
from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from backend.rl.observation import CLIP
from backend.rl.signal_env import OBSERVED, SignalSizingEnv

_MAX = float(np.finfo(np.float32).max)  # a stop's distance, a time limit and the open exposure have no upper bound
_BOUNDS = {"side": (-1.0, 1.0), "confidence": (0.0, 1.0), "stop_distance": (0.0, _MAX), "time_limit": (0.0, _MAX),
           "open_exposure": (0.0, _MAX), "recent_win_rate": (0.0, 1.0)}


class SignalSizingGymEnv(gymnasium.Env):
    """One signal sizing environment as a `gymnasium.Env` (see the module docstring). `args`: SignalSizingEnv's
    (trades, series, spec, risk, sim, menu); the environment runs on the CPU."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, *args, episode_signals: int = 256, seed: int = 0) -> None:
        super().__init__()
        self._args, self._episode_signals = args, episode_signals
        self._env = self._make(seed)
        spec = self._env.spec
        n_market = spec.window * len(spec.market_features)
        low = np.concatenate([np.full(n_market, -CLIP), [_BOUNDS[f][0] for f in OBSERVED]]).astype(np.float32)
        high = np.concatenate([np.full(n_market, CLIP), [_BOUNDS[f][1] for f in OBSERVED]]).astype(np.float32)
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self.action_space = spaces.Discrete(len(self._env.menu))
        self._mask: torch.Tensor | None = None

    def _make(self, seed: int) -> SignalSizingEnv:
        return SignalSizingEnv(*self._args, n_envs=1, episode_signals=self._episode_signals, seed=seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._env = self._make(int(seed))
        obs, self._mask = self._env.reset()
        return obs[0].numpy().copy(), {}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._mask is None:
            raise RuntimeError("step() called before reset()")
        obs, self._mask, reward, _, truncated, info = self._env.step(torch.tensor([int(action)]))
        done = bool(truncated[0])
        if done:
            obs = info["final_obs"]
            self._mask = None
        return obs[0].numpy().copy(), float(reward[0]), False, done, {"invalid": bool(info["invalid"][0])}

    def action_masks(self) -> np.ndarray:
        if self._mask is None:
            raise RuntimeError("action_masks() called before reset()")
        return self._mask[0].numpy().copy()
