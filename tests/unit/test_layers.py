"""The layers' dependencies as the README's Architecture section draws them, checked on the imports themselves."""
from __future__ import annotations

import ast
from pathlib import Path

BACKEND = Path(__file__).resolve().parents[2] / "backend"
SIZING_MAY_USE = {"SizingInputs", "MarketData", "AccountState", "OrderRejected", "BrokerUnavailable"}


CONCRETE_BROKERS = ("backend.brokers.sim", "backend.brokers.alpaca", "alpaca")  # alpaca: alpaca-py


def imported(path: Path) -> list[tuple[str, set[str]]]:
    """(module, names) of every import in a file, those inside functions included (`import a.b`: no names)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.append((node.module or "", {a.name for a in node.names}))
        elif isinstance(node, ast.Import):
            found += [(a.name, set()) for a in node.names]
    return found


def imports(package: str) -> list[tuple[str, str, set[str]]]:
    """(file, module, names) of every `from backend... import ...` in a package."""
    return [(path.name, module, names) for path in sorted((BACKEND / package).rglob("*.py"))
            for module, names in imported(path) if module.startswith("backend")]


def test_risk_and_sizing_read_the_market_and_the_account_through_their_ports_only():
    for package in ("risk", "sizing"):
        assert any(module == "backend.brokers.base" for _, module, _ in imports(package))  # the scan sees them
        for file, module, names in imports(package):
            if module == "backend.brokers.base":
                assert names <= SIZING_MAY_USE, (package, file, names - SIZING_MAY_USE)


def test_the_domain_imports_nothing_of_the_layers_above_it():
    assert all(module.startswith("backend.domain") for _, module, _ in imports("domain"))


def test_the_executor_and_the_monitor_reach_storage_through_the_trade_repository_port_only():
    found = [(file, module) for file, module, _ in imports("execution") if file in ("executor.py", "monitor.py")]
    assert ("executor.py", "backend.execution.ports") in found and ("monitor.py", "backend.execution.ports") in found
    assert not [(file, module) for file, module in found if module.startswith("backend.store")]


def test_only_the_brokers_and_the_composition_root_import_a_concrete_broker():
    """Everything else reaches the simulator, Alpaca and alpaca-py through the ports of backend/brokers/base.py."""
    def concrete(module: str, names: set[str]) -> set[str]:
        candidates = {module} | {f"{module}.{name}" for name in names}  # from backend.brokers import sim
        return {m for m in candidates if any(m == c or m.startswith(c + ".") for c in CONCRETE_BROKERS)}

    found = {(str(path.relative_to(BACKEND)), m) for path in BACKEND.rglob("*.py")
             for module, names in imported(path) for m in concrete(module, names)}
    allowed = {(file, m) for file, m in found if file.startswith("brokers/") or file == "bootstrap.py"}
    assert found - allowed == set()
    assert {("bootstrap.py", "backend.brokers.sim.SimBroker"), ("bootstrap.py", "backend.brokers.alpaca.AlpacaBroker"),
            ("brokers/alpaca.py", "alpaca.trading.client.TradingClient")} <= allowed  # the scan sees imports


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
