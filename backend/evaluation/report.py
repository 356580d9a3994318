"""The evaluation report: report.json plus PNG plots (equity against the baselines, drawdowns, the exposure held
over time and the leverage of each trade, exposure and leverage against the signal's confidence, the policy's
action distribution per test window), written with matplotlib's Agg backend (no display needed)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PLOTS = ("equity.png", "drawdown.png", "exposure.png", "exposure_vs_confidence.png", "actions.png")


def write(out: Path, report: dict, tracks: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    policy, chained = report["policy"], tracks["chained"]
    starts = [w["test"]["start"] for w in report["windows"]]
    bounds = np.cumsum([0] + [len(t[policy].turnover) for t in tracks["windows"]])

    fig, ax = plt.subplots(figsize=(11, 5))
    for name, t in chained.items():
        ax.plot(t.equity, lw=2.2 if name == policy else 1.0, label=name, zorder=3 if name == policy else 2)
    _window_axis(ax, bounds, starts)
    ax.set(ylabel="equity (start = 1)", yscale="log", title=f"{policy}: chained out-of-sample test windows")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, out / "equity.png")

    fig, ax = plt.subplots(figsize=(11, 4))
    for name, t in chained.items():
        ax.plot(-(1 - t.equity / np.maximum.accumulate(t.equity)), lw=2.0 if name == policy else 0.8, label=name)
    _window_axis(ax, bounds, starts)
    ax.set(ylabel="drawdown", title="drawdowns")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, out / "drawdown.png")

    sized = {name: t.sizes for name, t in chained.items() if t.sizes is not None}  # the policies sizing signals
    fig, (ax, lev) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)  # what sizing chose, bar by bar
    for name, t in chained.items():
        if name == policy or "kelly" in name or "atr" in name:
            ax.plot(t.exposure, lw=1.6 if name == policy else 0.8, label=name, zorder=3 if name == policy else 2)
    for name, z in sized.items():
        lev.scatter(z[:, 0], z[:, 3], s=8, alpha=0.6, label=name)
    _window_axis(lev, bounds, starts)
    ax.set(ylabel="exposure held (x equity)", title=f"{policy}: exposure over time, against the sizing baselines")
    lev.set(ylabel="leverage of each trade placed")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, out / "exposure.png")

    fig, (ax, lev) = plt.subplots(1, 2, figsize=(12, 5))
    for name, z in sized.items():
        ax.scatter(z[:, 1], z[:, 2], s=8, alpha=0.5, label=name)
        lev.scatter(z[:, 1], z[:, 3], s=8, alpha=0.5, label=name)
    if sized:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, f"{policy} does not size signals (it trades every bar)", ha="center", transform=ax.transAxes)
    ax.set(xlabel="signal confidence", ylabel="exposure chosen (notional / equity)",
           title="exposure against confidence (0: skipped)")
    lev.set(xlabel="signal confidence", ylabel="leverage", title="leverage of the trades placed")
    _save(fig, out / "exposure_vs_confidence.png")

    fig, ax = plt.subplots(figsize=(11, 4))
    per_window = [t[policy].actions for t in tracks["windows"]]
    if per_window[0] is None:
        ax.text(0.5, 0.5, f"{policy} has no discrete decisions to show", ha="center", transform=ax.transAxes)
    else:
        names = sorted(set(np.concatenate([a.ravel() for a in per_window])))
        shares = np.array([[np.mean(a == n) for n in names] for a in per_window])
        bottom = np.zeros(len(per_window))
        for j, n in enumerate(names):
            ax.bar(range(len(per_window)), shares[:, j], bottom=bottom, label=n)
            bottom += shares[:, j]
        ax.set_xticks(range(len(per_window)), starts, rotation=45, fontsize=7)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set(ylabel="share of decisions", title=f"{policy}: action distribution per test window")
    _save(fig, out / "actions.png")
    return [out / "report.json", *(out / p for p in PLOTS)]


def _window_axis(ax, bounds: np.ndarray, starts: list[str]) -> None:
    for b in bounds[1:-1]:
        ax.axvline(b, color="grey", lw=0.5, ls=":")
    ax.set_xticks(bounds[:-1], starts, rotation=45, fontsize=7)
    ax.set_xlabel("test window start")


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
