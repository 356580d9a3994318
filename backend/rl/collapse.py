"""The action-collapse monitor (seed 003): is a policy stuck on one action?

Dominance (share of the most frequent action), entropy of the action frequencies (nats), mean run length of
consecutive identical actions, and trade frequency (share of bars on which anything was traded), each with
the seed's alert threshold."""
from __future__ import annotations

import numpy as np
import torch

from backend.rl.ppo import collapse_stats

THRESHOLDS = {"dominance": 0.60, "entropy": 0.30, "repeats": 5.0, "trade_frequency": 0.05}


def collapse_monitor(labels: np.ndarray, turnover: np.ndarray) -> dict:
    """labels (n, k): the decisions of k series over n bars; turnover (n,): traded value / equity per bar."""
    _, counts = np.unique(labels, return_counts=True)
    dominance, entropy = collapse_stats(torch.as_tensor(counts))
    runs = 1 + (labels[1:] != labels[:-1]).sum(axis=0)  # per column
    stats = {"dominance": dominance, "entropy": entropy, "repeats": float(labels.shape[0] / runs.mean()),
             "trade_frequency": float(np.mean(turnover > 0))}
    above = {"dominance", "repeats"}
    alerts = [name for name, limit in THRESHOLDS.items()
              if (stats[name] > limit if name in above else stats[name] < limit)]
    return {**stats, "alerts": alerts}
