"""Tabular Q-learning over 300 states x 25 (size multiplier, leverage) actions.

Each trade is a one-step episode: the reward arrives when the trade closes, and the update
Q(s, a) += alpha (r - Q(s, a)) runs in the database (Store.close_and_learn). This class only chooses.
The decision's own state and action keys travel with it; nothing is remembered as "last" here.
"""
from __future__ import annotations

import random
from dataclasses import replace
from typing import Protocol

from backend.domain.model import Proposal
from backend.domain.state import ACTIONS, Action
from backend.sizing.atr import AtrRule
from backend.sizing.base import SizingContext


class QTableReader(Protocol):
    def q_lookup(self, state_key: str) -> tuple[dict[str, tuple[float, int]], float]:
        """({action_key: (q, visits)} for the state, current epsilon)"""


class QLearningPolicy:
    name = "qlearning"

    def __init__(self, table: QTableReader, rng: random.Random, min_state_visits: int, fallback: AtrRule) -> None:
        self._table = table
        self._rng = rng
        self._min_visits = min_state_visits
        self._fallback = fallback

    def size_of(self, action: Action, ctx: SizingContext) -> float:
        """The action's size multiplier scales the capital committed; leverage scales the notional on it."""
        return ctx.base_size_usd * action.size_mult * action.leverage

    def propose(self, ctx: SizingContext) -> Proposal:
        row, epsilon = self._table.q_lookup(ctx.state_key)
        visits = sum(n for _, n in row.values())
        if visits < self._min_visits:
            # no experience here: the ATR rule sizes the trade, and its action (1.0 x 1) is learned from
            p = self._fallback.propose(ctx)
            action = Action(1.0, 1)
            return replace(
                p,
                state_key=ctx.state_key,
                action_key=action.key,
                q_value=row.get(action.key, (0.0, 0))[0],
                why=f"state {ctx.state_key} has {visits} outcome(s), fewer than {self._min_visits}: {p.why}",
            )
        valid = [a for a in ACTIONS if ctx.fits_caps(self.size_of(a, ctx), a.leverage)]
        masked = len(ACTIONS) - len(valid)
        if not valid:  # nothing fits: the smallest action, which the caps will cut or reject
            valid = [min(ACTIONS, key=lambda a: a.size_mult * a.leverage)]
        if self._rng.random() < epsilon:
            action, how = self._rng.choice(valid), f"explored (epsilon {epsilon:.3f})"
        else:
            best = max(row.get(a.key, (0.0, 0))[0] for a in valid)
            action = self._rng.choice([a for a in valid if row.get(a.key, (0.0, 0))[0] == best])
            how = "greedy"
        q, n = row.get(action.key, (0.0, 0))
        return Proposal(
            size_usd=self.size_of(action, ctx),
            leverage=float(action.leverage),
            policy=self.name,
            state_key=ctx.state_key,
            action_key=action.key,
            q_value=q,
            why=(
                f"Q-learning {how}: state {ctx.state_key}, action size x{action.size_mult} leverage "
                f"{action.leverage}x (Q={q:.4f} over {n} outcome(s)); {masked} of {len(ACTIONS)} actions "
                f"masked by the caps"
            ),
        )
