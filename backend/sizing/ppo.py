"""A trained PPO checkpoint as a sizing policy, served as it was trained.

A "sizing" checkpoint (PPOSizingPolicy, trained in backend.rl.signal_env) chooses each signal's exposure from
its menu: the observation is the environment's (the market window at the signal's bar, the signal's and the
account's features, built by the same functions), and the mask is the caps' (SizingContext.max_exposure and
min_exposure, from the risk manager's cap_limits, as in training). The risk manager applies the caps after it.

A "trading" checkpoint (PPOPolicy, seed 000's environment): the observation is built by backend.rl.observation from the broker's bars and account, as in training, and
the environment's own action mask applies. For a buy signal the policy may answer HOLD or BUY 25/50/75%
(a sell signal: SELL 25/50/75%); HOLD declines the trade. The size is the environment's: the action's share
of `base_alloc` of the equity left after the safety buffer, within the position cap.
"""
from __future__ import annotations

import torch

from backend.brokers.base import SizingInputs
from backend.domain.model import Proposal, Side
from backend.domain.state import action_key
from backend.rl.checkpoint import KINDS, LoadedPolicy
from backend.rl.collapse import THRESHOLDS
from backend.rl.env import ACTION_NAMES, BUY_25, BUY_75, HOLD, SELL_25, SELL_75, SIZE, action_mask, base_dollars
from backend.rl.observation import HISTORY_BARS, live_market_window, live_observation
from backend.rl.ppo import collapse_stats
from backend.rl.signal_env import account_features, menu_mask, signal_features
from backend.sizing.base import SizingContext


class PPOPolicy:
    name = "ppo"

    def __init__(self, policy: LoadedPolicy, broker: SizingInputs, reference_equity: float) -> None:
        # one sample per decision: intra-op threads cost more than they give and would take the core the
        # event loop and the database need
        torch.set_num_threads(1)
        self._p = policy
        self._broker = broker
        self._reference = reference_equity  # account_change is measured from the equity at start-up
        self._windows: dict[str, tuple[object, torch.Tensor, bool]] = {}  # symbol -> (bar time, window, valid)
        self._labels = ACTION_NAMES
        self._counts = torch.zeros(len(self._labels))

    def _window(self, symbol: str) -> tuple[torch.Tensor, bool]:
        bars = self._broker.history(symbol, self._p.spec.window + HISTORY_BARS)
        cached = self._windows.get(symbol)
        if cached is None or cached[0] != bars.ts[-1]:
            cached = (bars.ts[-1], *live_market_window(self._p.spec, bars))
            self._windows[symbol] = cached
        return cached[1], cached[2]

    @torch.inference_mode()
    def propose(self, ctx: SizingContext) -> Proposal:
        cfg = self._p.env
        account = ctx.account
        held = sum(p.quantity * p.market_price for p in self._broker.positions() if p.symbol == ctx.signal.symbol)
        cash = account.cash - cfg.safety_buffer_pct * account.equity
        if ctx.signal.side is Side.SELL and not cfg.allow_short and held <= 0:
            return Proposal(0.0, self.name, f"this PPO model is long-only: it opens no short, and holds no long in "
                                            f"{ctx.signal.symbol} to reduce", model_version=self._p.version)
        window, valid = self._window(ctx.signal.symbol)
        obs = live_observation(window, valid, position_value=held, account_value=account.equity,
                               cash_available=cash, reference_value=self._reference,
                               max_position_pct=cfg.max_position_pct)
        f = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
        mask = action_mask(f(held), f(account.equity), f(cash), cfg)
        probs = self._p.probabilities(obs, mask)
        side = range(BUY_25, BUY_75 + 1) if ctx.signal.side is Side.BUY else range(SELL_25, SELL_75 + 1)
        best = max(side, key=lambda a: float(probs[a]))
        action = best if probs[best] > probs[HOLD] else HOLD
        self._counts[action] += 1
        odds = ", ".join(f"{ACTION_NAMES[a]} {float(probs[a]):.2f}" for a in (HOLD, *side))
        if action == HOLD:
            return Proposal(0.0, self.name, f"PPO holds ({odds})", action_key=ACTION_NAMES[HOLD],
                            model_version=self._p.version)
        room = max(0.0, cfg.max_position_pct * account.equity - abs(held))
        size = min(float(base_dollars(f(account.equity), cfg)) * SIZE[action], room)
        return Proposal(size / account.equity, self.name, f"PPO {ACTION_NAMES[action]} ({odds})",
                        action_key=ACTION_NAMES[action], model_version=self._p.version)

    def describe(self) -> dict:
        """What serves: the checkpoint, what it can do, and how its choices spread so far."""
        dominance, entropy = self.collapse()
        alerts = [f"one action takes {dominance:.0%} of decisions"] if dominance > THRESHOLDS["dominance"] else []
        if entropy < THRESHOLDS["entropy"]:
            alerts.append(f"action entropy {entropy:.2f} nats")
        return {"model_version": self._p.version, "kind": self._p.kind, "environment": KINDS[self._p.kind],
                **self._facts(),
                "action_counts": {name: int(n) for name, n in zip(self._labels, self._counts.tolist())},
                "action_dominance": dominance, "action_entropy": entropy,
                "collapse_alerts": alerts if self._counts.sum() > 0 else []}

    def _facts(self) -> dict:
        return {"long_only": not self._p.env.allow_short, "max_position_pct": self._p.env.max_position_pct}

    def collapse(self) -> tuple[float, float]:
        """(dominance, entropy) of the actions this policy has chosen while serving."""
        return collapse_stats(self._counts)


class PPOSizingPolicy(PPOPolicy):
    """A "sizing" checkpoint: an exposure from its menu per signal, masked by the caps, as in its environment."""

    def __init__(self, policy: LoadedPolicy, broker: SizingInputs, reference_equity: float,
                 default_time_limit_hours: float | None) -> None:
        super().__init__(policy, broker, reference_equity)
        self._menu = torch.tensor(policy.menu, dtype=torch.float64)
        self._labels = tuple(action_key(e) for e in policy.menu)
        self._counts = torch.zeros(len(self._labels))
        self._default_limit = default_time_limit_hours or 0.0

    def observation(self, ctx: SizingContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(observation, mask) for the signal of `ctx`: what its environment would show at this bar."""
        window, _ = self._window(ctx.signal.symbol)
        signal = ctx.signal
        f = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
        features = signal_features(f(signal.side.sign), f(signal.confidence), f(ctx.stop_distance_pct),
                                   f(signal.time_limit_hours or self._default_limit))
        account = account_features(f(ctx.account.exposure), f(0.5 if ctx.win_rate is None else ctx.win_rate))
        mask = menu_mask(self._menu, f(ctx.max_exposure), f(ctx.min_exposure))
        return torch.cat([window, features, account]), mask

    @torch.inference_mode()
    def propose(self, ctx: SizingContext) -> Proposal:
        obs, mask = self.observation(ctx)
        probs = self._p.probabilities(obs, mask)
        action = int(probs.argmax())
        self._counts[action] += 1
        exposure = float(self._menu[action])
        top = torch.topk(probs, min(3, len(probs)))
        odds = ", ".join(f"{self._labels[int(a)]}x {float(p):.2f}" for p, a in zip(top.values, top.indices))
        why = f"PPO sizes {exposure:g}x ({odds})" if exposure else f"PPO skips ({odds})"
        return Proposal(exposure, self.name, why, action_key=self._labels[action], model_version=self._p.version)

    def _facts(self) -> dict:
        sizing = self._p.meta.get("sizing") or {}
        return {"menu": list(self._p.menu), "trained_caps": sizing.get("caps"),
                "data_window": self._p.meta.get("data_window")}
