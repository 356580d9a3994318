"""The signal-conditioned sizing environment: a PPO policy sizes signals on the Q agent's menu, as it is served.

Every environment walks a list of signals in time order (bench/sizing's generated markets, a user's signal file
on its bars, or the built-in trend follower). At each signal the policy chooses an exposure (notional / equity)
from the Q agent's menu, 0 being the skip; the leverage it implies is max(1, exposure). Exposures the caps would
cut are masked: the mask comes from `backend.risk.manager.cap_limits`, the risk manager's own caps, for the
environment's account (its equity, the notional of its open trades, the stop distance).

What a signal becomes does not depend on its size, as in the live engine: each signal that opens a trade is
followed to its end (a skipped one as a shadow), one trade per symbol, a same-side signal meanwhile refused and
an opposite one closing it. So every trade's path (entry at the next open with slippage, its stop or target
within a bar, its time limit or an opposite signal, the worst price while open) is computed once
(`trade_paths`), and the reward of every menu exposure is the Q agent's own counterfactual reward of that path
(`backend.domain.rewards.counterfactual_rewards`, log growth, margin calls included): the change in log equity
the trade would bring. A step is then a gather, and state is tensors of shape (n_envs, ...) on any device.

The account: equity in USD (it settles a trade's growth when the trade has ended, so an observation never sees
an outcome that is still in the future), the notional of the open trade per symbol (gross exposure for the caps
and the observation). Observation: the market feature window at the signal's bar (`backend.rl.observation`;
none when the spec's window is 0), the signal's features and the account's (`signal_features`,
`account_features` below), built by the same functions when a live signal is sized
(`backend.sizing.ppo.PPOSizingPolicy`).

Training (`backend.rl.ppo`, `counterfactual`): every step also returns every menu exposure's reward on the signal
just sized, so the PPO surrogate takes its expectation over the actions exactly; the training trades' rewards are
their lower confidence bound (`Trades.pessimistic`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from backend.config import RiskSettings, SimSettings
from backend.domain.bars import Series
from backend.data.signals import TimedSignal
from backend.domain.model import Account, AssetRules, Side, TradePath, bracket_exit
from backend.domain.rewards import counterfactual_rewards, log_growth_reward
from backend.indicators import InsufficientData, history_bars, wilder_atr_adx
from backend.risk.manager import cap_limits
from backend.rl.observation import ObservationSpec, market_features, normalise

KIND = "sizing"
SIGNAL_FEATURES = ("side", "confidence", "stop_distance", "time_limit")
# no equity: log-growth sizing does not depend on the wealth it sizes, and an account's equity drifts out of any
# range the training episodes showed (a held-out pass is longer than an episode)
ACCOUNT_FEATURES = ("open_exposure", "recent_win_rate")
OBSERVED = SIGNAL_FEATURES + ACCOUNT_FEATURES  # after the market window, in this order


def signal_features(side: torch.Tensor, confidence: torch.Tensor, stop_pct: torch.Tensor,
                    time_limit_hours: torch.Tensor) -> torch.Tensor:
    """(..., 4): side +1/-1, confidence 0..1, stop distance (fraction of the price) x 10, log1p(time limit in
    days) (0: none)."""
    return torch.stack([side, confidence, 10 * stop_pct, torch.log1p(time_limit_hours / 24)], dim=-1).float()


def account_features(open_exposure: torch.Tensor, win_rate: torch.Tensor) -> torch.Tensor:
    """(..., 2): gross open exposure (notional / equity), win rate of the last trades that ended (0.5 before
    any)."""
    return torch.stack([open_exposure, win_rate], dim=-1).float()


def menu_mask(menu: torch.Tensor, max_exposure: torch.Tensor, min_exposure: torch.Tensor) -> torch.Tensor:
    """(..., M) bool: what `SizingContext.feasible` says of each menu exposure: 0 always, else at least the
    minimum order and at most what every cap allows."""
    e = menu.expand(*max_exposure.shape, -1)
    return (e == 0) | ((e >= min_exposure[..., None]) & (e <= max_exposure[..., None] * (1 + 1e-9)))


@dataclass(frozen=True)
class Trades:
    """The signals that open a trade, in time order, with what every menu exposure earns on each."""

    ids: list[str]
    symbol: np.ndarray  # (N,) index into the series
    bar: np.ndarray  # (N,) the bar the signal is decided at (its close)
    exit_bar: np.ndarray  # (N,) the bar whose open (or range) ends the trade
    side: np.ndarray  # (N,) +1 / -1
    confidence: np.ndarray
    stop_pct: np.ndarray  # the stop's distance, fraction of the price (the ATR stop when the signal has none)
    time_limit_hours: np.ndarray  # 0: none
    win_rate: np.ndarray  # of the last `window` trades that ended by the decision bar (0.5 before any)
    growth: np.ndarray  # (N, M) log growth of each menu exposure
    unused: dict[str, int]  # signals that open no trade, by reason

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, rows: np.ndarray) -> "Trades":
        pick = lambda a: a[rows]  # noqa: E731
        return Trades([self.ids[i] for i in np.flatnonzero(rows)], *(pick(getattr(self, f)) for f in (
            "symbol", "bar", "exit_bar", "side", "confidence", "stop_pct", "time_limit_hours", "win_rate",
            "growth")), self.unused)

    def pessimistic(self, z: float) -> "Trades":
        """Each exposure's growth less z standard errors of its mean over these trades: the lower confidence bound
        the Q agent ranks exposures by (RL_SIZING_CONFIDENCE_Z), as a cost per trade, so that an edge these trades
        do not make clear is not worth sizing."""
        return replace(self, growth=self.growth - z * self.growth.std(axis=0) / np.sqrt(len(self)))


def _path(s: Series, side: Side, t: int, stop: float, target: float | None, deadline: np.datetime64 | None,
          closed_by: int | None, slip: float, commission: float) -> tuple[TradePath, int] | None:
    """A trade decided at bar t's close, as the simulated broker and the monitor play it: entry at bar t+1's
    open; each bar, the stop (filled at the level less slippage, or the open when gapped through) or the target;
    after a bar at or past the deadline, or an opposite signal at bar `closed_by`, an exit at the next open.
    The worst price: the adverse extreme of every bar held before the exit. None: still open at the data's end."""
    sign = side.sign
    entry = s.open[t + 1] * (1 + sign * slip)
    worst = entry
    for k in range(t + 1, len(s)):
        hit = bracket_exit(side, stop, target, s.open[k], s.high[k], s.low[k])
        if hit is not None:
            level, reason = hit
            price = level * (1 - sign * slip) if reason == "stop" else level
            exit_price, exit_bar = price, k
            break
        worst = min(worst, s.low[k]) if sign > 0 else max(worst, s.high[k])
        if (deadline is not None and s.ts[k] >= deadline) or k == closed_by:
            if k + 1 >= len(s):
                return None
            exit_price, exit_bar = s.open[k + 1] * (1 - sign * slip), k + 1
            break
    else:
        return None
    worst = min(worst, exit_price) if sign > 0 else max(worst, exit_price)
    hours = (s.ts[exit_bar] - s.ts[t + 1]).astype("timedelta64[s]").astype(float) / 3600
    return TradePath(side, float(entry), float(exit_price), float(worst), 2 * commission, hours), exit_bar


def trade_paths(series: list[Series], signals: list[TimedSignal], risk: RiskSettings, sim: SimSettings,
                win_rate_window: int, menu: tuple[float, ...], first_bar: int = 0) -> Trades:
    """Every signal as the live engine meets it (see the module docstring), on series sharing one calendar.
    A signal is decided at the latest bar at or before its time; its stop is the risk manager's (given, or
    RM_ATR_STOP_MULTIPLE ATRs over the same bars); signals the engine would refuse are counted in `unused`."""
    calendar = series[0].ts
    index = {s.symbol: i for i, s in enumerate(series)}
    slip, commission = sim.slippage_bps / 1e4, sim.commission_bps / 1e4
    period = risk.atr_period
    history = history_bars(period)
    by_symbol: dict[int, list[tuple[int, TimedSignal]]] = {}
    unused: dict[str, int] = {}

    def refuse(reason: str) -> None:
        unused[reason] = unused.get(reason, 0) + 1

    for timed in sorted(signals, key=lambda x: x.at):
        bar = int(np.searchsorted(calendar, timed.at, side="right")) - 1
        if timed.signal.symbol not in index:
            refuse("unknown symbol")
        elif bar < max(first_bar, history - 1) or bar >= len(calendar) - 1:
            refuse("outside the bars")
        else:
            by_symbol.setdefault(index[timed.signal.symbol], []).append((bar, timed))
    rows = []
    for i, pending in by_symbol.items():
        s = series[i]
        busy_until, busy_side = -1, None  # the bar whose open ends the active trade
        for j, (bar, timed) in enumerate(pending):
            sig = timed.signal
            if bar < busy_until:
                refuse("same side as the active trade" if sig.side == busy_side else "closes the active trade")
                continue
            price = float(s.close[bar])
            stop = sig.stop_price
            if stop is None:
                try:
                    atr, _ = wilder_atr_adx(s.high[bar - history + 1:bar + 1], s.low[bar - history + 1:bar + 1],
                                            s.close[bar - history + 1:bar + 1], period)
                except InsufficientData:
                    refuse("too few bars for the ATR")
                    continue
                stop = price - sig.side.sign * risk.atr_stop_multiple * atr
            stop_pct = (price - stop) * sig.side.sign / price
            if stop_pct < 1e-4:
                refuse("stop on the wrong side or too close")
                continue
            limit = sig.time_limit_hours or risk.default_time_limit_hours
            deadline = (s.ts[bar] + np.timedelta64(int(limit * 3600), "s")) if limit else None
            # the first opposite signal while this one is open closes it at the next open
            closed_by = next((b for b, t in pending[j + 1:] if t.signal.side != sig.side), None)
            played = _path(s, sig.side, bar, stop, sig.target_price, deadline, closed_by, slip, commission)
            if played is None:
                refuse("still open at the data's end")
                continue
            path, exit_bar = played
            busy_until, busy_side = exit_bar, sig.side
            rows.append((bar, exit_bar, i, sig, stop_pct, limit or 0.0, path))
    rows.sort(key=lambda r: (r[0], r[2]))
    growth = np.array([counterfactual_rewards(r[6], menu, 1.0, log_growth_reward, risk.maintenance_margin)
                       for r in rows]).reshape(len(rows), len(menu)) / 100
    won = np.array([r[6].outcome(1.0, 1.0, None).won for r in rows], dtype=float)
    exits = np.array([r[1] for r in rows])
    win_rate = np.full(len(rows), 0.5)
    order = np.argsort(exits, kind="stable")
    for n, r in enumerate(rows):
        ended = order[exits[order] <= r[0]][-win_rate_window:]  # the trades that ended by this decision, latest last
        if len(ended):
            win_rate[n] = won[ended].mean()
    col = lambda f: np.array([f(r) for r in rows], dtype=float)  # noqa: E731
    return Trades([r[3].signal_id for r in rows], col(lambda r: r[2]).astype(int), col(lambda r: r[0]).astype(int),
                  exits.astype(int), col(lambda r: r[3].side.sign), col(lambda r: r[3].confidence),
                  col(lambda r: r[4]), col(lambda r: r[5]), win_rate, growth, unused)


@dataclass(frozen=True)
class Caps:
    """The settings the caps and the account are simulated with (recorded in a checkpoint)."""

    rm_max_leverage: float
    rm_max_position_exposure: float
    rm_max_position_usd: float | None
    rm_max_risk_pct: float
    rm_max_exposure: float
    rm_min_position_usd: float
    rm_maintenance_margin: float
    sim_multiplier: float
    sim_initial_cash: float

    @staticmethod
    def of(risk: RiskSettings, sim: SimSettings) -> "Caps":
        values = risk.model_dump(by_alias=True) | sim.model_dump(by_alias=True)  # by variable name, as recorded
        return Caps(**{f: values[f] for f in Caps.__dataclass_fields__})


class SignalSizingEnv:
    """n_envs accounts sizing the signals of `trades`, each episode `episode_signals` consecutive signals from a
    random start. Actions: indices into `menu`."""

    continuous = False
    counterfactual = True  # info["rewards"]: every menu exposure's reward on the signal just sized

    def __init__(self, trades: Trades, series: list[Series], spec: ObservationSpec, risk: RiskSettings,
                 sim: SimSettings, menu: tuple[float, ...], n_envs: int, episode_signals: int = 256,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        if len(trades) < 2:
            raise ValueError(f"{len(trades)} signal(s) open a trade: too few to train or evaluate on")
        self.trades, self.spec, self.risk, self.sim, self.n = trades, spec, risk, sim, n_envs
        self.device = torch.device(device)
        self.menu = torch.tensor(menu, dtype=torch.float64, device=self.device)  # the account in float64: caps exact
        self.action_names = tuple(f"{e:g}" for e in menu)
        self.episode_signals = episode_signals
        self._gen = torch.Generator(device=self.device).manual_seed(seed)
        dev = lambda a, dtype=torch.float32: torch.as_tensor(np.asarray(a), dtype=dtype, device=self.device)  # noqa
        windows = market_windows(series, spec, trades.symbol, trades.bar)
        self._static = torch.cat([dev(windows), signal_features(
            dev(trades.side), dev(trades.confidence), dev(trades.stop_pct), dev(trades.time_limit_hours))], dim=1)
        self._growth = dev(trades.growth)
        self._symbol, self._bar, self._exit = (dev(a, torch.long) for a in (trades.symbol, trades.bar,
                                                                               trades.exit_bar))
        self._stop_pct, self._win_rate = dev(trades.stop_pct, torch.float64), dev(trades.win_rate)
        self._n_symbols = len(series)
        self._rows = torch.arange(n_envs, device=self.device)
        z = lambda *shape, dtype=torch.float64: torch.zeros(n_envs, *shape, device=self.device, dtype=dtype)  # noqa
        self.i, self.end = z(dtype=torch.long), z(dtype=torch.long)
        self.equity, self.episode_return, self.episode_length = z(), z(), z(dtype=torch.long)
        self.open_notional, self.open_growth = z(self._n_symbols), z(self._n_symbols)
        self.open_until = z(self._n_symbols, dtype=torch.long)

    # --- episodes --------------------------------------------------------------------------------------------
    def reset(self, starts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """New episodes everywhere: at random signals, or at the given ones (a reproducible evaluation)."""
        self._reset(torch.ones(self.n, dtype=torch.bool, device=self.device))
        if starts is not None:
            self.i[:] = starts
            self.end[:] = torch.clamp(starts + self.episode_signals, max=len(self.trades))
        self._settle()
        self._mask = self.action_mask()
        return self.observe(), self._mask

    def _reset(self, which: torch.Tensor) -> None:
        k = int(which.sum())
        if k == 0:
            return
        last_start = max(1, len(self.trades) - min(self.episode_signals, len(self.trades) // 2))
        start = torch.randint(0, last_start, (k,), generator=self._gen, device=self.device)
        self.i[which] = start
        self.end[which] = torch.clamp(start + self.episode_signals, max=len(self.trades))
        self.equity[which] = self.sim.initial_cash
        self.open_notional[which] = 0.0
        self.open_growth[which] = 0.0
        self.open_until[which] = 0
        self.episode_return[which] = 0.0
        self.episode_length[which] = 0

    def _settle(self) -> None:
        """Trades that ended by the current signal's bar add their growth to the equity and free their notional."""
        ended = self.open_until <= self._bar[self.i][:, None]
        self.equity = self.equity * torch.exp((self.open_growth * ended).sum(dim=1))
        self.open_growth = torch.where(ended, 0.0, self.open_growth)
        self.open_notional = torch.where(ended, 0.0, self.open_notional)

    # --- what the policy sees and may do ---------------------------------------------------------------------
    def gross(self) -> torch.Tensor:
        return self.open_notional.sum(dim=1)

    def observe(self) -> torch.Tensor:
        acct = account_features(self.gross() / self.equity, self._win_rate[self.i])
        return torch.cat([self._static[self.i], acct], dim=1)

    def limits(self) -> dict[str, torch.Tensor]:
        """The risk manager's caps for the current signal of every environment (USD)."""
        multiplier, equity, gross = self.sim.multiplier, self.equity, self.gross()
        account = Account(equity=equity, cash=equity - gross, buying_power=multiplier * equity - gross,
                          multiplier=multiplier, shorting_enabled=True, gross_position_value=gross)
        return cap_limits(self.risk, account, self._stop_pct[self.i], AssetRules())

    def action_mask(self) -> torch.Tensor:
        limits = torch.broadcast_tensors(*(torch.as_tensor(v, device=self.device) for v in self.limits().values()))
        max_exposure = torch.stack(limits).min(dim=0).values / self.equity
        return menu_mask(self.menu, max_exposure, self.risk.min_position_usd / self.equity)

    def action_class(self, action: torch.Tensor) -> torch.Tensor:
        return action

    # --- one signal ----------------------------------------------------------------------------------------
    def step(self, action: torch.Tensor):
        """Size every environment's current signal. Returns obs, mask, reward (the trade's log growth), terminated
        (never: a ruined account's growth is bounded below), truncated (the episode's last signal), info."""
        valid = self._mask  # the state has not changed since it was computed
        invalid = ~valid[self._rows, action]
        action = torch.where(invalid, torch.zeros_like(action), action)  # a masked exposure is played as a skip
        exposure = self.menu[action]
        growth = self._growth[self.i]
        reward = growth.gather(1, action[:, None]).squeeze(1)
        rewards = torch.where(valid, growth, 0.0)
        symbol = self._symbol[self.i]
        self.open_notional[self._rows, symbol] = exposure * self.equity
        self.open_growth[self._rows, symbol] = reward.double()
        self.open_until[self._rows, symbol] = self._exit[self.i]
        self.i = self.i + 1
        self.episode_return += reward
        self.episode_length += 1
        truncated = self.i >= self.end
        terminated = torch.zeros_like(truncated)
        info = {"invalid": invalid, "traded": exposure, "exposure": exposure,
                "rewards": rewards}
        if truncated.any():
            self.i = torch.where(truncated, self.i - 1, self.i)  # the terminal observation: the last signal again
            info.update(final_obs=self.observe()[truncated], episode_return=self.episode_return[truncated].clone(),
                        episode_length=self.episode_length[truncated].clone())
            self._reset(truncated)
        self._settle()
        self._mask = self.action_mask()
        return self.observe(), self._mask, reward, terminated, truncated, info


def market_windows(series: list[Series], spec: ObservationSpec, symbol: np.ndarray, bar: np.ndarray) -> np.ndarray:
    """(N, window x F) the normalised market feature window ending at each (symbol, bar): what
    `observation.live_market_window` builds from the broker's bars at that bar."""
    feats = [normalise(spec, market_features(s.open, s.high, s.low, s.close, s.volume)) for s in series]
    offsets = np.arange(-spec.window + 1, 1)
    out = np.zeros((len(bar), spec.window * len(spec.market_features)), dtype=np.float32)
    for i, f in enumerate(feats):
        rows = symbol == i
        idx = np.clip(bar[rows, None] + offsets[None, :], 0, None)
        out[rows] = f[idx].reshape(int(rows.sum()), out.shape[1])
    return out


def sizing_spec(spec: ObservationSpec) -> ObservationSpec:
    """The observation spec of this environment: the market window, then the signal's and the account's features."""
    return replace(spec, account_features=OBSERVED)

