"""Prometheus metrics, one registry per service instance (tests build many)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "sizer_decisions_total", "Sizing decisions made", ["policy", "approved"], registry=self.registry
        )
        self.decision_seconds = Histogram(
            "sizer_decision_seconds", "Time to size one signal", registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
        )
        self.signals = Counter("sizer_signals_total", "Signals handled by outcome", ["status"], registry=self.registry)
        self.rewards = Counter("sizer_rewards_total", "Rewards applied", ["policy", "reward_fn"], registry=self.registry)
        self.reward_sum = Gauge("sizer_reward_sum", "Sum of rewards applied (may be negative)",
                                ["policy"], registry=self.registry)
        self.dead_letters = Gauge("sizer_bus_dead_letters", "Events the workers gave up on, waiting in <stream>:dead",
                                  ["topic"], registry=self.registry)
        self.equity = Gauge("sizer_account_equity_usd", "Broker account equity", registry=self.registry)
        self.exposure = Gauge("sizer_account_gross_exposure", "Gross position value / equity", registry=self.registry)
        self.trading_state = Gauge("sizer_trading_state", "1 for the current trading state (ACTIVE, REDUCING, HALTED)",
                                   ["state"], registry=self.registry)
        self.epsilon = Gauge("sizer_agent_epsilon", "Current exploration rate", registry=self.registry)
        self.action_dominance = Gauge("sizer_policy_action_dominance",
                                      "Share of the most frequent action of the served PPO policy (collapse monitor)",
                                      registry=self.registry)
        self.action_entropy = Gauge("sizer_policy_action_entropy",
                                    "Entropy of the served PPO policy's action frequencies, nats", registry=self.registry)
