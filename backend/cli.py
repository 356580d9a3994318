"""`sizer`: serve, worker, migrate, replay, train, evaluate, qtable export/import."""
from __future__ import annotations

import json
import logging
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from backend.config import ConfigError, Settings, load_settings

cli = typer.Typer(help="sizer: reinforcement-learning position sizing for live trading", no_args_is_help=True)
qtable = typer.Typer(help="Export or import the Q-table in the seed's JSON format", no_args_is_help=True)
cli.add_typer(qtable, name="qtable")
data = typer.Typer(help="Historical bars for replay, backtest and SIM_BARS", no_args_is_help=True)
cli.add_typer(data, name="data")


def _settings(**overrides) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _simulated(**overrides) -> Settings:
    """Settings for the commands that replay history (replay, backtest): always the simulated broker, whatever
    BROKER a .env written for Alpaca says."""
    return _settings(**{"broker": "sim", **overrides})


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@cli.command()
def serve(host: Annotated[Optional[str], typer.Option(help="Overrides HOST")] = None,
          port: Annotated[Optional[int], typer.Option(help="Overrides PORT")] = None) -> None:
    """Run the API and the trading loop (embedded defaults: SQLite, simulated broker on bundled bars)."""
    import uvicorn

    from backend.api.app import create_api

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = _settings(**overrides)
    if settings.service.broker == "sim":  # bad bar files or SIM_START stop start-up with the reason
        from backend.bootstrap import make_sim_broker

        try:
            make_sim_broker(settings)
        except ValueError as exc:
            _fail(str(exc))
    if settings.sizing.policy == "ppo":  # fail before the server starts, with the reason
        from backend.rl.checkpoint import load

        try:
            load(settings.sizing.model_path)
        except ValueError as exc:
            _fail(f"MODEL_PATH: {exc}")
    server = settings.service
    logging.basicConfig(level=server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_api(settings), host=server.host, port=server.port, log_level=server.log_level,
                access_log=False)


@cli.command()
def worker() -> None:
    """Execute queued signals and turn broker events into trades and rewards (needs REDIS_URL); run any number."""
    import signal
    import threading

    from backend.bootstrap import build_service, uses_workers

    settings = _settings()
    if not uses_workers(settings):
        _fail("sizer worker needs REDIS_URL (the bus it consumes) and a broker every worker can reach: with "
              "BROKER=sim the simulated account lives inside one process and cannot be shared. Use BROKER=alpaca, "
              "or run `sizer serve` alone without REDIS_URL.")
    logging.basicConfig(level=settings.service.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = build_service(settings, worker=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        service.bus.run(stop)
    finally:
        service.close()


@cli.command()
def migrate() -> None:
    """Upgrade the database at DATABASE_URL to the newest schema."""
    from backend.store.db import run_migrations

    settings = _settings()
    run_migrations(settings.service.database_url)
    typer.echo("database is at the newest schema")


@cli.command()
def replay(
    start: Annotated[Optional[datetime], typer.Option(formats=["%Y-%m-%d"], help="First bar (SIM_START)")] = None,
    end: Annotated[Optional[datetime], typer.Option(formats=["%Y-%m-%d"], help="Last bar (default: data end)")] = None,
    seed: Annotated[int, typer.Option(help="Exploration seed")] = 7,
    keep: Annotated[bool, typer.Option(help="Learn into DATABASE_URL instead of a scratch database")] = False,
    compare: Annotated[bool, typer.Option(help="Also run the ATR rule on the same signals")] = True,
    bars: Annotated[Optional[list[str]], typer.Option(
        help="A bar file (CSV or Parquet) per symbol, SYMBOL=PATH or PATH named after its symbol; repeat it. "
             "Default: SIM_BARS, else the bundled indices")] = None,
) -> None:
    """Drive the whole loop over bars (bundled or your files) with a built-in signal source, then summarise."""
    from rich.progress import Progress

    from backend.replay import run_replay

    base = _simulated(**({"sim_start": start.date()} if start else {}), **({"sim_bars": tuple(bars)} if bars else {}),
                     rl_sizing_seed=seed)
    if end and base.sim.start and end.date() <= base.sim.start:
        _fail("--end must come after --start")
    runs = [("qlearning", {"sizing_policy": "qlearning"})] + ([("atr", {"sizing_policy": "atr"})] if compare else [])
    summaries = []
    with tempfile.TemporaryDirectory() as scratch, Progress(transient=False) as progress:
        for name, overrides in runs:
            url = base.service.database_url if keep and name == "qlearning" else f"sqlite:///{scratch}/{name}.db"
            settings = base.replace(**overrides, database_url=url)
            task = progress.add_task(f"replay {name}", total=None)
            try:
                summary = run_replay(settings, end.date() if end else None,
                                     on_bar=lambda i, n, t=task: progress.update(t, completed=i, total=n))
            except ValueError as exc:
                _fail(str(exc))
            summaries.append(summary)
    _print_summaries(summaries)


@cli.command()
def backtest(
    signals: Annotated[str, typer.Option(help="A signal CSV (timestamp, symbol, side, confidence; optional "
                                              "signal_id, stop_price, target_price, time_limit_hours), or trend "
                                              "(the built-in trend follower)")] = "trend",
    policy: Annotated[str, typer.Option(help="Policies to compare, comma-separated: qlearning, ppo, atr, "
                                             "fixed:EXPOSURE, kelly[:FRACTION], or a checkpoint PATH.pt")
                      ] = "qlearning,atr,fixed:0.5,kelly",
    bars: Annotated[Optional[list[str]], typer.Option(
        help="A bar file (CSV or Parquet) per symbol, SYMBOL=PATH or PATH named after its symbol; repeat it. "
             "Default: SIM_BARS, else the bundled indices")] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.json, trades.csv and the plots")] = Path("runs/backtest"),
    start: Annotated[Optional[datetime], typer.Option(formats=["%Y-%m-%d"], help="First bar (SIM_START)")] = None,
    end: Annotated[Optional[datetime], typer.Option(formats=["%Y-%m-%d"], help="Last bar (default: data end)")] = None,
    seed: Annotated[int, typer.Option(help="Exploration seed")] = 7,
    baseline: Annotated[Optional[str], typer.Option(
        help="The policy every other is compared with, signal by signal (default: the first named)")] = None,
) -> None:
    """How would each policy have sized these signals? The same bars, signals and costs through the live engine."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from backend.backtest import parse_policies, run_backtest
    from backend.data.signals import load_signals

    settings = _simulated(**({"sim_start": start.date()} if start else {}),
                         **({"sim_bars": tuple(bars)} if bars else {}), rl_sizing_seed=seed)
    try:
        specs = parse_policies(policy)
        timed = None if signals == "trend" else load_signals(Path(signals))
    except ValueError as exc:
        _fail(str(exc))
    with Progress(transient=False) as progress:
        def on_policy(label: str):
            task = progress.add_task(f"backtest {label}", total=None)
            return lambda i, n: progress.update(task, completed=i, total=n)

        try:
            report = run_backtest(settings, specs, timed, out, end.date() if end else None, on_policy, baseline)
        except ValueError as exc:
            _fail(str(exc))
    table = Table(title=f"backtest: {report['bars']['first']}..{report['bars']['last']}, "
                        f"{', '.join(report['bars']['symbols'])}")
    for col in ("policy", "final equity", "return", "log growth/yr", "Sharpe", "max DD", "trades", "win rate",
                "mean exposure", "mean leverage"):
        table.add_column(col)
    for name, p in report["policies"].items():
        pct = lambda x: "-" if x is None else f"{x:.1%}"  # noqa: E731
        table.add_row(name, f"{p['final_equity']:,.0f}", f"{p['total_return']:+.1%}", pct(p["log_growth_per_year"]),
                      f"{p['sharpe']:.2f}", pct(p["max_drawdown"]), str(p["trades"]), pct(p["win_rate"]),
                      f"{p['mean_exposure']:.2f}", "-" if p["mean_leverage"] is None else f"{p['mean_leverage']:.2f}")
    Console().print(table)
    paired = report["paired"]
    if paired["policies"]:
        table = Table(title=f"paired, signal by signal, against {paired['baseline']}: the difference in log growth "
                            "per signal (95% intervals)")
        for col in ("policy", "signals", "mean difference", "t interval", "bootstrap interval", "p-value"):
            table.add_column(col)
        for name, d in paired["policies"].items():
            if "mean" not in d:
                table.add_row(name, str(d["signals"]), "-", "-", "-", "-")
                continue
            table.add_row(name, str(d["signals"]), f"{d['mean']:+.4%}", "{:+.4%} .. {:+.4%}".format(*d["ci"]),
                          "{:+.4%} .. {:+.4%}".format(*d["bootstrap_ci"]), f"{d['p_value']:.3g}")
        Console().print(table)
    s = report["signals"]
    if "read" in s:
        skipped = "; ".join(f"{n} {reason}" for reason, n in s["skipped"].items()) or "none"
        typer.echo(f"signals: {s['read']} read, {s['used']} used, not used: {skipped} (ids in report.json)")
    typer.echo(f"report.json, trades.csv and plots in {out}")


def _print_summaries(summaries) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="replay summary")
    for col in ("policy", "signals", "trades placed", "win rate", "return", "max drawdown",
                "Q coverage (cells / states)"):
        table.add_column(col)
    for s in summaries:
        table.add_row(
            s.policy,
            str(s.signals),
            str(s.trades),
            "-" if s.win_rate is None else f"{s.win_rate:.1%}",
            f"{s.total_return:+.2%}",
            f"{s.max_drawdown:.2%}",
            f"{s.visited_cells}/{300 * s.actions} ({s.coverage:.1%}) / {s.visited_states}/300",
        )
    Console().print(table)


@cli.command("train")
def train_cmd(
    config: Annotated[Optional[Path], typer.Option(help="YAML with sections ppo, env, data")] = None,
    out: Annotated[Path, typer.Option(help="Folder for model.pt, logs and evaluation.json")] = Path("runs/ppo"),
    total_timesteps: Annotated[Optional[int], typer.Option(help="Overrides ppo.total_timesteps")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Overrides ppo.seed")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda")] = None,
    gru: Annotated[Optional[bool], typer.Option(help="GRU window encoder")] = None,
    bars: Annotated[Optional[list[str]], typer.Option(
        help="Sizing: a bar file per symbol (SYMBOL=PATH or PATH); repeat it. Default: the bundled indices")] = None,
    signals: Annotated[Optional[str], typer.Option(
        help="Sizing: a signal CSV, trend, or a generated market (coin:F:T, coin:fair, coin:losing, confidence, "
             "drift:MU:SIGMA). Given (or kind: sizing in the config), the signal sizing environment is trained")] = None,
) -> None:
    """Train a PPO policy, then report it on held-out data: the signal sizing environment (--signals, or kind:
    sizing in the config; what SIZING_POLICY=ppo serves) or seed 000's trading environment."""
    from rich.progress import Progress

    from backend.data.files import BarsFileError
    from backend.data.signals import SignalsFileError
    from backend.rl.training import is_sizing_config, load_config, load_sizing_config, run, run_sizing

    flags = {"total_timesteps": total_timesteps, "seed": seed, "device": device, "gru": gru}
    flags = {k: v for k, v in flags.items() if v is not None}
    try:
        sizing = signals is not None or bool(bars) or is_sizing_config(config)
        if sizing:
            data_flags = {k: v for k, v in {"bars": bars, "signals": signals}.items() if v}
            ppo, signal_data, caps = load_sizing_config(config, flags, data_flags)
        else:
            ppo, data = load_config(config, flags)
    except (OSError, ValueError, TypeError) as exc:
        _fail(f"config: {exc}")
    if sizing:
        with Progress() as progress:
            task = progress.add_task("training", total=None)
            try:
                path, report = run_sizing(ppo, signal_data, caps, out, _simulated(), lambda i, n, row: progress.update(
                    task, completed=i, total=n, description=f"training  SPS {row['charts/SPS']:,}"))
            except (BarsFileError, SignalsFileError, ValueError) as exc:
                _fail(str(exc))
        h = report["held_out"]
        typer.echo(f"checkpoint {path} (sizing); held-out {h['signals']} signals: log growth "
                   f"{h['policy']['log_growth']:+.4f} at mean exposure {h['policy']['mean_exposure']:.2f}; best fixed "
                   f"exposure in hindsight {h['best_fixed_in_hindsight']['exposure']:g}: "
                   f"{h['best_fixed_in_hindsight']['log_growth']:+.4f}; random {h['random']['log_growth']:+.4f}")
        return
    with Progress() as progress:
        task = progress.add_task("training", total=None)

        def on_update(i: int, n: int, row: dict) -> None:
            ret = row["charts/episodic_return"]
            progress.update(task, completed=i, total=n, description=(
                f"training  SPS {row['charts/SPS']:,}  return {'-' if ret is None else f'{ret:+.4f}'}  "
                f"dominance {row['collapse/dominance']:.2f}"))

        try:
            path, validation = run(ppo, data, out, on_update)
        except BarsFileError as exc:
            _fail(f"config data.bars: {exc}")
    typer.echo(f"checkpoint {path}; held-out: final account x{validation.mean_final_account:.4f} "
               f"(buy and hold x{validation.buy_and_hold:.4f}), dominant {validation.dominant_action} "
               f"{validation.dominance:.0%}, invalid {validation.invalid_share:.1%}")
    if not validation.passed:
        failed = [name for name, ok in validation.checks.items() if not ok]
        _fail(f"held-out validation failed: {', '.join(failed)} (see {out / 'evaluation.json'})")


@cli.command("evaluate")
def evaluate_cmd(
    policy: Annotated[str, typer.Option(help="A PPO checkpoint path, or ppo | continuous | regime (trained "
                                             "per window), qlearning | atr (the live engine in replay)")],
    out: Annotated[Path, typer.Option(help="Folder for report.json and the PNG plots")] = Path("runs/evaluation"),
    train_years: Annotated[int, typer.Option(min=1, help="Training window, calendar years")] = 3,
    test_years: Annotated[int, typer.Option(min=1, help="Test window, calendar years (the roll step)")] = 1,
    steps: Annotated[int, typer.Option(min=4096, help="Training steps per window (trainable policies)")] = 200_000,
    seed: Annotated[int, typer.Option(help="Seeds training and the replayed agent")] = 7,
    max_windows: Annotated[Optional[int], typer.Option(min=1, help="Only the last N windows")] = None,
    bars: Annotated[Optional[list[str]], typer.Option(
        help="A bar file (CSV or Parquet) per symbol, SYMBOL=PATH or PATH named after its symbol; repeat it. "
             "Default: the bundled S&P 500 and NASDAQ")] = None,
) -> None:
    """Walk-forward evaluation against baselines (cash, buy-and-hold, equal weight, ATR rule, Kelly)."""
    import torch
    from rich.progress import Progress

    from backend.data.files import load_market
    from backend.evaluation import policies, report
    from backend.evaluation.walkforward import walk_forward, windows
    from backend.rl.checkpoint import CheckpointError
    from backend.rl.env import EnvConfig

    torch.set_num_threads(1)
    try:
        series = list(load_market(tuple(bars or ()), ("SP500", "NASDAQ")).values())
    except ValueError as exc:
        _fail(str(exc))
    ts = series[0].ts
    try:
        wins = windows(ts, train_years, test_years)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    notes = []
    if policy in policies.TRAINABLE:
        run, name = policies.trained_policy(policy, steps, seed), policy
    elif policy in policies.REPLAYED:
        run, name = policies.replay_policy(policy, seed, tuple(bars or ())), policy
    else:
        try:
            run, train_end = policies.checkpoint_policy(Path(policy))
        except (CheckpointError, ValueError) as exc:
            raise typer.BadParameter(f"{exc}", param_hint="--policy") from None
        name = "checkpoint"
        kept = [w for w in wins if ts[w.test_start].astype("datetime64[D]").item() > train_end]
        notes.append(f"checkpoint {policy} was trained on bars up to {train_end}; {len(wins) - len(kept)} "
                     f"window(s) testing on earlier bars were skipped")
        wins = kept
    if max_windows:
        wins = wins[-max_windows:]
    if not wins:
        raise typer.BadParameter("no walk-forward window fits the data after the policy's training end",
                                 param_hint="--train-years/--test-years")
    with Progress() as progress:
        task = progress.add_task(f"evaluate {name}", total=len(wins))
        result, tracks = walk_forward(name, run, series, wins, EnvConfig().cost_rate, seed,
                                      on_window=lambda i, n: progress.update(task, completed=i),
                                      bars=tuple(bars or ()))
    result.update(notes=notes, config={"policy": policy, "train_years": train_years, "test_years": test_years,
                                       "steps": steps, "seed": seed})
    report.write(out, result, tracks)
    _print_evaluation(result)
    typer.echo(f"report and plots in {out}")


def _print_evaluation(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    policy, agg = result["policy"], result["aggregate"]
    table = Table(title=f"walk-forward: {agg['windows']} test windows chained (every window is in report.json)")
    for col in ("track", "return", "ann.", "Sharpe", "Sortino", "max DD", "turnover/day", "exposure", "DSR", "rank"):
        table.add_column(col)
    for name, s in agg["scores"].items():
        table.add_row(f"[bold]{name}[/bold]" if name == policy else name, f"{s['total_return']:+.1%}",
                      f"{s['annual_return']:+.1%}", f"{s['sharpe']:.2f}", f"{s['sortino']:.2f}",
                      f"{s['max_drawdown']:.1%}", f"{s['turnover']:.2%}", f"{s['avg_exposure']:.2f}",
                      f"{s['deflated_sharpe']:.2f}", str(s["rank"]))
    console = Console(width=max(Console().width, 130))
    console.print(table)
    console.print("criteria on the chained test windows (the verdict), and how many single windows pass each:")
    for criterion, ok in agg["criteria"].items():
        console.print(f"  {criterion:<26} aggregate {'PASS' if ok else 'FAIL'}   single windows passing "
                      f"{agg['windows_passing'][criterion]}/{agg['windows']}")
    for note in result.get("notes", []):
        console.print(note)


@data.command("fetch")
def data_fetch(
    symbols: Annotated[str, typer.Option(help="Comma-separated, e.g. AAPL,MSFT or BTC/USD")],
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First day wanted")],
    timeframe: Annotated[str, typer.Option(help="1Day, 1Hour, 15Min or 1Min")] = "1Day",
    cache: Annotated[Path, typer.Option(help="Folder of the Parquet files")] = Path("data/bars"),
) -> None:
    """Pull historical bars through Alpaca's data API (ALPACA_* settings) into local Parquet files, only what is
    new since the last fetch. Use them with --bars or SIM_BARS."""
    from datetime import timezone

    from backend.bootstrap import BAR_TIMEFRAMES, make_bar_history
    from backend.brokers.base import BrokerUnavailable
    from backend.data import bar_cache

    if timeframe not in BAR_TIMEFRAMES:
        _fail(f"--timeframe {timeframe!r}: one of {', '.join(BAR_TIMEFRAMES)}")
    settings = _settings()
    if settings.alpaca.api_key_id is None or settings.alpaca.api_secret_key is None:
        _fail("fetching bars needs ALPACA_API_KEY_ID and ALPACA_API_SECRET_KEY (a free paper account's keys do)")
    names = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    try:
        fetched = bar_cache.fetch(make_bar_history(settings), names, timeframe, start.replace(tzinfo=timezone.utc),
                                  cache)
    except (BrokerUnavailable, ValueError) as exc:
        _fail(str(exc))
    for f in fetched:
        typer.echo(f"{f.symbol}: {f.added} new bar(s), {f.total} in {f.path}")


def _store():
    from backend.store.db import make_engine, run_migrations
    from backend.store.repositories import Store

    settings = _settings()
    run_migrations(settings.service.database_url)
    store = Store.open(make_engine(settings.service.database_url))
    store.q_table.ensure_agent(settings.sizing.epsilon)
    return settings, store


@qtable.command("export")
def qtable_export(path: Annotated[Path, typer.Argument(help="JSON file to write, - for stdout")]) -> None:
    """Write the Q-table (format sizer.qtable.v2, see the README), the outcomes and the agent's metadata."""
    from backend.sizing.qtable_file import export_document

    settings, store = _store()
    _, rows = store.q_table.q_values(None, 0, 10**9)
    agent = store.q_table.agent()
    doc = export_document(
        rows, settings.risk.exposure_menu(), settings.sizing.reward,
        outcomes=[
            {"state_key": o.state_key, "action_key": o.action_key, "exposure": o.exposure, "reward": o.reward,
             "trade_return": o.trade_return, "pnl_pct": o.pnl_pct, "duration_hours": o.duration_hours,
             "max_drawdown_pct": o.max_drawdown_pct, "timestamp": o.closed_at.isoformat()}
            for o in store.outcomes.iter_outcomes()
        ],
        metadata={
            "exploration_rate": agent.epsilon,
            "recent_win_rate": store.outcomes.recent_win_rate(settings.state.win_rate_window),
            "total_updates": agent.total_updates,
            "last_updated": agent.last_updated_at.isoformat() if agent.last_updated_at else None,
        },
    )
    text = json.dumps(doc, indent=2)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
    else:
        path.write_text(text)
        typer.echo(f"wrote {len(doc['q_table'])} cells and {len(doc['outcomes'])} outcomes to {path}")


@qtable.command("import")
def qtable_import(
    path: Annotated[Path, typer.Argument(help="JSON file: sizer.qtable.v2, or the predecessors' size_mult|leverage")],
    replace: Annotated[bool, typer.Option(help="Drop the current Q-table first")] = False,
) -> None:
    """Load Q-table cells from a file. Outcomes in the file are history and stay in the file."""
    from backend.sizing.qtable_file import import_cells

    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        _fail(f"cannot read {path}: {exc}")
    settings = _settings()
    try:
        cells = import_cells(doc, settings.risk.exposure_menu())
    except ValueError as exc:
        _fail(f"{path}: {exc}; nothing was imported")
    _, store = _store()
    n = store.q_table.import_q_table(cells, replace=replace)
    typer.echo(f"imported {n} cells" + (" (table replaced)" if replace else ""))


if __name__ == "__main__":
    cli()
