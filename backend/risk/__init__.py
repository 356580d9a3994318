"""Risk: everything that can stop or shrink a trade, whatever policy sized it.

- manager.py: the risk manager, the one place the hard caps live (cap_limits, apply_caps);
- trading_state.py: ACTIVE / REDUCING / HALTED, persisted, set by the protections or by hand;
- protections/: one file per protection (daily loss, drawdown from the peak, a losing streak, trades per day).
"""
from backend.risk.manager import RiskManager, SizingError, apply_caps, cap_limits

__all__ = ["RiskManager", "SizingError", "apply_caps", "cap_limits"]
