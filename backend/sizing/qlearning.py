"""The Q-learning sizer: 300 states x a menu of exposures, learned from every size at once.

Every trade is a one-step episode, and its price path tells what every exposure of the menu would have earned
(backend.domain.rewards.counterfactual_rewards): a closed trade updates all actions of its state, and of the
coarser states it pools with, in the transaction that records its outcome. With full information no
exploration is needed (epsilon defaults to 0).

The estimate of an action in a state is the average of its rewards (decayed over RL_SIZING_HORIZON_TRADES when
set), pooled with coarser states (all trades -> confidence -> regime + confidence -> the state) by empirical
Bayes: a finer bucket keeps its own average only as far as the buckets beside it differ by more than chance,
so buckets that carry no information share all their data, and informative ones (a confidence that predicts
the outcome) keep theirs.

The choice is gated by a lower confidence bound of that estimate: only exposures whose bound is above 0 (what
skipping earns) may be taken, so an edge that is not yet significant gets no size; among them, the one with the
best expected reward (Kelly's exposure as estimated so far). The gate alone keeps the agent out of markets
without an edge; ranking by the bound itself would also shrink every size by about z / t (t: the edge's
t-statistic so far), which costs growth long after the edge is established.
"""
from __future__ import annotations

import math

import random
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from backend.domain.model import Proposal, TradePath
from backend.domain.rewards import RewardFn, counterfactual_rewards
from backend.domain.state import ROOT_KEY, action_key, pooled_keys, pooling_tree
from backend.sizing.base import SizingContext


@dataclass(frozen=True)
class Cell:
    """What one action earned in one (pooled) state: decayed sums of its rewards."""

    weight: float = 0.0  # decayed count of the rewards
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0
    visits: int = 0  # every reward ever, undecayed


@dataclass(frozen=True)
class Learning:
    """What one closed trade teaches: a reward per (state, action), to be added atomically with the outcome.
    Each cell's earlier sums are multiplied by `decay` first (1: a plain average). `weight`: how much of one
    independent trade it is worth (1 / the trades open beside it: trades held at the same time move together,
    so k of them are counted as about one, and the evidence of an edge is not overstated). Each learning
    multiplies epsilon by `epsilon_decay`, never below `epsilon_min` (the exploration schedule)."""

    rewards: tuple[tuple[str, str, float], ...]  # (state key, action key, reward)
    decay: float
    weight: float = 1.0
    epsilon_decay: float = 1.0
    epsilon_min: float = 0.0

    def __post_init__(self) -> None:
        if not all(math.isfinite(r) for _, _, r in self.rewards):  # one NaN would poison every average it joins
            raise ValueError("a reward to learn must be finite")
        if not 0 < self.weight <= 1:
            raise ValueError("a trade's weight is in (0, 1]")


class QTable(Protocol):
    """The Q-table port: cells read in one go (the store caches them), written with a trade's close."""

    def q_cells(self, state_keys: Sequence[str]) -> tuple[dict[str, dict[str, Cell]], float]:
        """({state key: {action key: cell}} for the keys that have any, the current epsilon)"""


SPLIT_SIGMAS = 2.0  # buckets are told apart only when their spread exceeds chance by this many standard deviations


EMPTY = Cell()


def _arrays(cells: dict[str, Cell] | None, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, reward sums, reward square sums) of a state's actions, in `keys` order."""
    row = cells or {}
    return tuple(np.array([(c.weight, c.reward_sum, c.reward_sq_sum) for c in (row.get(k, EMPTY) for k in keys)]).T)


def _variance(w: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """The rewards' variance as it would be without an edge: their mean square, never below the variance
    around their mean, so a short lucky run does not look certain (inf where fewer than two rewards)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w > 1, s2 / w, np.inf)


def estimate(tree: Sequence[tuple[str, Sequence[str]]], cells: dict[str, dict[str, Cell]], keys: Sequence[str],
             prior_trades: float) -> tuple[np.ndarray, np.ndarray]:
    """(expected reward, its standard error) of each action in the tree's last state.

    All trades: their average, shrunk towards 0 (no edge) as if `prior_trades` trades had earned nothing.
    Each finer level: B x its own average + (1 - B) x the coarser estimate, with B = tau^2 / (tau^2 + se^2),
    where se^2 is the sampling variance of its own average and tau^2 the spread between it and its siblings
    beyond chance (DerSimonian-Laird, less SPLIT_SIGMAS standard deviations of chance). The two are
    correlated (the coarser level holds the finer one's trades), so the error is taken as if perfectly so:
    B x se + (1 - B) x the coarser error, never less than the truth."""
    root = tree[0][0]
    w, s1, s2 = _arrays(cells.get(root), keys)
    var = _variance(w, s2)
    evident = w > 1
    mean = np.where(evident, s1 / np.where(evident, w + prior_trades, 1), 0.0)
    error = np.where(evident, np.sqrt(var / (w + prior_trades)), np.inf)
    parent_var = var
    for level, siblings in tree[1:]:
        stats = [_arrays(cells.get(k), keys) for k in siblings]
        own_w, own_s1, own_s2 = _arrays(cells.get(level), keys)
        n = np.array([s[0] for s in stats])  # (siblings, actions)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            m = np.where(n > 0, np.array([s[1] for s in stats]) / n, 0.0)
            prec = np.where(parent_var > 0, n / parent_var, 0.0)
            total = prec.sum(0)
            pooled = (prec * m).sum(0) / total
            q = (prec * (m - pooled) ** 2).sum(0)
            k = (n > 0).sum(0)
            chance = (k - 1) + SPLIT_SIGMAS * np.sqrt(2.0 * np.maximum(k - 1, 0))
            tau2 = np.maximum(0.0, (q - chance) / (total - (prec * prec).sum(0) / total))
            se2 = parent_var / own_w
            b = np.where((k > 1) & (own_w > 0) & np.isfinite(se2) & (parent_var > 0), tau2 / (tau2 + se2), 0.0)
            b = np.nan_to_num(b)
            own_mean = np.where(own_w > 0, own_s1 / own_w, 0.0)
            mean = mean + b * (own_mean - mean)
            error = np.where(b > 0, b * np.sqrt(se2) + (1 - b) * error, error)
        parent_var = _variance(own_w, own_s2)
    return mean, error


class QLearningPolicy:
    """The tabular Q agent: the menu exposure with the best expected reward among those whose lower confidence
    bound is above 0 (skipping earns exactly 0): no size until an edge is significant, then Kelly's estimate."""

    name = "qlearning"

    def __init__(self, table: QTable, menu: Sequence[float], reward: RewardFn, *, confidence_z: float,
                 prior_trades: float, horizon_trades: float | None, maintenance: float, rng: random.Random,
                 epsilon_decay: float = 1.0, epsilon_min: float = 0.0) -> None:
        self._table = table
        self._epsilon_schedule = dict(epsilon_decay=epsilon_decay, epsilon_min=epsilon_min)
        self._maintenance = maintenance
        self.menu = tuple(menu)
        self._keys = tuple(action_key(e) for e in self.menu)
        self._reward = reward
        self._z = confidence_z
        self._prior = prior_trades
        self._decay = 1.0 if horizon_trades is None else 1.0 - 1.0 / horizon_trades
        self._rng = rng
        self._memo: dict[str, tuple[object, tuple]] = {}  # state -> (the cells read, their estimates)

    def estimates(self, state_key: str) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(expected reward, lower confidence bound) per menu action in this state, the trades behind the full
        state's own average, and epsilon."""
        tree = pooling_tree(state_key)
        cells, epsilon = self._table.q_cells(sorted({k for _, siblings in tree for k in siblings}))
        memo = self._memo.get(state_key)
        if memo is not None and memo[0] is cells:  # the same read (the store caches it): the same estimates
            return (*memo[1], epsilon)
        mean, error = estimate(tree, cells, self._keys, self._prior)
        lcb = np.where(np.isfinite(error), mean - self._z * np.where(np.isfinite(error), error, 0.0), -np.inf)
        lcb[0] = 0.0  # skipping earns exactly nothing
        result = (mean, lcb, cells.get(state_key, {}).get(self._keys[0], EMPTY).weight)
        self._memo[state_key] = (cells, result)
        return (*result, epsilon)

    def propose(self, ctx: SizingContext) -> Proposal:
        mean, lcb, trades, epsilon = self.estimates(ctx.state_key)
        feasible = np.array([ctx.feasible(e) for e in self.menu])
        if epsilon > 0 and self._rng.random() < epsilon:
            i = self._rng.choice(np.flatnonzero(feasible).tolist())
            how = f"explored (epsilon {epsilon:.3f})"
        else:  # skip (index 0, bound 0) is always allowed; ties: the smaller exposure
            i = int(np.argmax(np.where(feasible & ((lcb > 0) | (np.arange(len(lcb)) == 0)), mean, -np.inf)))
            how = "the best expected reward whose lower bound is above 0"
        exposure = self.menu[i]
        barred = int((~feasible).sum())
        return Proposal(
            exposure=exposure,
            policy=self.name,
            action_key=self._keys[i],
            q_value=float(mean[i]),
            why=(
                f"Q-learning, {how}: state {ctx.state_key} ({trades:.0f} trade(s) of its own), exposure "
                f"{exposure:g}x (expected reward {mean[i]:.3f}, lower bound {lcb[i]:.3f}; the best expected: "
                f"{self.menu[int(np.argmax(np.where(feasible, mean, -np.inf)))]:g}x); {barred} of "
                f"{len(self.menu)} exposures outside the caps"
            ),
        )

    def learn(self, path: TradePath, state_key: str, equity: float, weight: float = 1.0) -> Learning:
        """Every action's counterfactual reward on this path, for the state and each coarser level."""
        rewards = counterfactual_rewards(path, self.menu, equity, self._reward, self._maintenance)
        return Learning(
            rewards=tuple((state, key, r) for state in pooled_keys(state_key) for key, r in zip(self._keys, rewards)),
            decay=self._decay,
            weight=weight,
            **self._epsilon_schedule,
        )


class KellyPolicy:
    """Kelly's exposure estimated online: the menu point whose average reward over all past trades is the best
    (their empirical growth-optimal exposure, without pooling or confidence bounds), times `fraction` (0.5:
    half Kelly). It reads the Q-table's all-trades row, so it needs log_growth rewards to mean Kelly."""

    name = "kelly"

    def __init__(self, table: QTable, menu: Sequence[float], fraction: float) -> None:
        self._table = table
        self.menu = tuple(menu)
        self._keys = tuple(action_key(e) for e in self.menu)
        self._fraction = fraction

    def propose(self, ctx: SizingContext) -> Proposal:
        cells, _ = self._table.q_cells((ROOT_KEY,))
        w, s1, _ = _arrays(cells.get(ROOT_KEY), self._keys)
        if w[0] < 2:
            return Proposal(0.0, self.name, f"Kelly x{self._fraction:g}: fewer than 2 trades to estimate it from")
        best = self.menu[int(np.argmax(np.where(w > 0, s1 / np.where(w > 0, w, 1.0), -np.inf)))]
        exposure = min(self._fraction * best, ctx.max_exposure)
        return Proposal(exposure, self.name, f"Kelly x{self._fraction:g}: the best exposure over {w[0]:.0f} trades "
                                             f"is {best:g}x, so {exposure:.3g}x")
