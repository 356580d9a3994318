"""THE observation: the only definition of what a PPO policy sees, used by training and live inference.

An observation is a window of per-bar market features (z-scored with statistics from the training window)
followed by account features. The spec (names, window, statistics, version) is saved in every checkpoint;
a checkpoint whose spec differs from this code's is refused with a clear error.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from backend.indicators import IncrementalWilder

VERSION = 1
MARKET_FEATURES = (
    "log_return",  # ln(close / previous close)
    "gap",  # ln(open / previous close)
    "high_range",  # ln(high / close)
    "low_range",  # ln(low / close)
    "atr_pct",  # Wilder ATR(14) / close
    "adx",  # Wilder ADX(14) / 100
    "dist_sma20",  # close / SMA(20) - 1
    "dist_sma50",  # close / SMA(50) - 1
    "vol20",  # stdev of the last 20 log returns
    "volume_ratio",  # ln(volume / mean volume of the last 20 bars); 0 when the series has no volume
)
ACCOUNT_FEATURES = (
    "position_pct",  # signed position value / account value / max position fraction: -1..1
    "available_pct",  # cash free to trade / account value
    "account_change",  # log10(account value / reference value)
    "has_position",  # validity flag: 1 when a position is open
    "window_valid",  # validity flag: 1 when every bar in the window has all its features
)
WARMUP_BARS = 50  # bars before the first row whose features are all defined (SMA 50)
CLIP = 5.0


@dataclass(frozen=True)
class ObservationSpec:
    window: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    version: int = VERSION
    market_features: tuple[str, ...] = MARKET_FEATURES
    account_features: tuple[str, ...] = ACCOUNT_FEATURES

    @property
    def size(self) -> int:
        return self.window * len(self.market_features) + len(self.account_features)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict, account_features: tuple[str, ...] = ACCOUNT_FEATURES) -> "ObservationSpec":
        """The spec of a checkpoint, refused unless this code builds the same observation (`account_features`:
        what follows the market window in the checkpoint's kind of environment)."""
        spec = ObservationSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
        current = (VERSION, MARKET_FEATURES, account_features)
        if (spec.version, spec.market_features, spec.account_features) != current:
            raise SpecMismatch(
                f"checkpoint observation v{spec.version} {list(spec.market_features)} + "
                f"{list(spec.account_features)} differs from this code's v{VERSION} {list(MARKET_FEATURES)} + "
                f"{list(account_features)}: retrain the model with this version"
            )
        return spec


class SpecMismatch(ValueError):
    """A checkpoint was trained on observations this code does not build."""


def _rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    c = np.cumsum(np.insert(x, 0, 0.0))
    out[n - 1:] = (c[n:] - c[:-n]) / n
    return out


def market_features(open_, high, low, close, volume) -> np.ndarray:
    """Per-bar features (T, F), causal: row t uses bars up to t only. Rows before warm-up hold NaN."""
    o, h, lo, c = (np.asarray(a, dtype=np.float64) for a in (open_, high, low, close))
    v = np.asarray(volume, dtype=np.float64)
    t = len(c)
    prev = np.concatenate([[np.nan], c[:-1]])
    log_ret = np.log(c / prev)
    wilder = IncrementalWilder(14)
    atr = np.full(t, np.nan)
    adx = np.full(t, np.nan)
    for i in range(t):
        wilder.update(h[i], lo[i], c[i])
        if i + 1 >= 2 * 14 + 1:
            atr[i], adx[i] = wilder.atr, wilder.adx
    vol20 = np.full(t, np.nan)
    if t >= 21:
        windows = np.lib.stride_tricks.sliding_window_view(log_ret[1:], 20)
        vol20[20:] = windows.std(axis=1, ddof=1)
    if np.any(v > 0):
        volume_ratio = np.log(np.maximum(v, 1e-12) / np.maximum(_rolling_mean(v, 20), 1e-12))
    else:
        volume_ratio = np.zeros(t)
    feats = np.stack(
        [
            log_ret,
            np.log(o / prev),
            np.log(h / c),
            np.log(lo / c),
            atr / c,
            adx / 100.0,
            c / _rolling_mean(c, 20) - 1,
            c / _rolling_mean(c, 50) - 1,
            vol20,
            volume_ratio,
        ],
        axis=1,
    )
    feats[:WARMUP_BARS] = np.nan
    return feats


def fit_spec(features: np.ndarray, window: int) -> ObservationSpec:
    """Normalisation statistics from the training rows only (never from held-out data)."""
    valid = features[np.all(np.isfinite(features), axis=1)]
    if len(valid) < window:
        raise ValueError(f"only {len(valid)} complete feature rows: too few to fit a window of {window}")
    std = valid.std(axis=0)
    return ObservationSpec(window=window, mean=tuple(valid.mean(axis=0).tolist()),
                           std=tuple(np.where(std > 1e-12, std, 1.0).tolist()))


def normalise(spec: ObservationSpec, features: np.ndarray) -> np.ndarray:
    """z-score and clip; undefined values become 0 (the window_valid flag says so)."""
    z = (features - np.asarray(spec.mean)) / np.asarray(spec.std)
    return np.nan_to_num(np.clip(z, -CLIP, CLIP), nan=0.0).astype(np.float32)


def account_features(
    position_value: torch.Tensor, account_value: torch.Tensor, cash_available: torch.Tensor,
    reference_value: float, max_position_pct: float, window_valid: torch.Tensor,
) -> torch.Tensor:
    """(..., 5) account features from (...)-shaped tensors: the same code for a batch of training
    environments and for one live account."""
    safe = account_value.clamp_min(1e-9)
    return torch.stack(
        [
            (position_value / safe / max_position_pct).clamp(-1.0, 1.0),
            (cash_available / safe).clamp(0.0, 1.0),
            torch.log10(safe / reference_value),
            (position_value != 0).to(account_value.dtype),
            window_valid.to(account_value.dtype),
        ],
        dim=-1,
    )


HISTORY_BARS = 300  # Wilder smoothing forgets its start after ~300 bars: live features equal training's


def live_market_window(spec: ObservationSpec, bars) -> tuple[torch.Tensor, bool]:
    """The normalised feature window (window x F, flattened) and its validity from the broker's recent bars: ask
    for window + HISTORY_BARS bars, so that Wilder smoothing matches the training features; fewer are taken as
    the series' whole history (a younger series: the training features saw no more), at least window + warm-up."""
    need = spec.window + WARMUP_BARS
    if len(bars.close) < need:
        raise ValueError(f"an observation needs {need} bars of history, have {len(bars.close)}")
    raw = market_features(bars.open, bars.high, bars.low, bars.close, bars.volume)[len(bars.close) - spec.window:]
    return torch.from_numpy(normalise(spec, raw)).ravel(), bool(np.all(np.isfinite(raw)))


def live_observation(
    window: torch.Tensor, valid: bool, *, position_value: float, account_value: float, cash_available: float,
    reference_value: float, max_position_pct: float,
) -> torch.Tensor:
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    account = account_features(t(position_value), t(account_value), t(cash_available), reference_value,
                               max_position_pct, t(float(valid)))
    return torch.cat([window, account])
