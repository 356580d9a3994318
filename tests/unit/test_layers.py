"""The layers' dependencies as the README's Architecture section draws them, checked on the imports themselves."""
from __future__ import annotations

import ast
from pathlib import Path

BACKEND = Path(__file__).resolve().parents[2] / "backend"
SIZING_MAY_USE = {"SizingInputs", "MarketData", "AccountState", "OrderRejected", "BrokerUnavailable"}


def imports(package: str) -> list[tuple[str, str, set[str]]]:
    """(file, module, names) of every `from backend... import ...` in a package."""
    found = []
    for path in sorted((BACKEND / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("backend"):
                found.append((path.name, node.module, {a.name for a in node.names}))
            elif isinstance(node, ast.Import):
                found += [(path.name, a.name, set()) for a in node.names if a.name.startswith("backend")]
    return found


def test_risk_and_sizing_read_the_market_and_the_account_through_their_ports_only():
    for package in ("risk", "sizing"):
        assert any(module == "backend.brokers.base" for _, module, _ in imports(package))  # the scan sees them
        for file, module, names in imports(package):
            assert module not in ("backend.brokers.sim", "backend.brokers.alpaca"), (package, file, module)
            if module == "backend.brokers.base":
                assert names <= SIZING_MAY_USE, (package, file, names - SIZING_MAY_USE)


def test_the_domain_imports_nothing_of_the_layers_above_it():
    assert all(module.startswith("backend.domain") for _, module, _ in imports("domain"))


def test_components_are_given_their_group_of_settings_only():
    """The whole `Settings` reaches the entry points, the composition root and the runners that build a whole
    service (replay, backtest, evaluation, training); each component takes its group (RiskSettings ...)."""
    seen = [(package, file, names) for package in ("brokers", "bus", "data", "domain", "execution", "risk", "rl",
                                                   "sizing", "store")
            for file, module, names in imports(package) if module == "backend.config"]
    assert ("brokers", "alpaca.py", {"AlpacaSettings"}) in seen  # the scan sees them
    for package, file, names in seen:
        if (package, file) != ("rl", "training.py"):
            assert names and "Settings" not in names, (package, file, names)
