"""Benchmark signals through Redis Streams to `sizer worker` processes, end to end, in two mixes side by side.

Run on demand (not part of the test suite), from the project root, with the local Redis and PostgreSQL:

    .venv/bin/python bench/bus.py [--workers 1 2] [--latency-ms 0 50] [--jitter-ms 10] [--rate-limit 200]
                                  [--signals 2000] [--symbols 16] [--burst 500]

What it does: creates a scratch database sizer_bench_<random> on 127.0.0.1:5432 (migrated) per run, starts the
fake Alpaca server of the tests in this process (orders fill at once; each request takes `--latency-ms` +-
`--jitter-ms`), and for each latency and worker count starts that many `sizer worker` subprocesses (BROKER=alpaca
against the fake, their own Redis key prefix), waits until they are ready, then XADDs two backlogs at once:

* opening: `--burst` signals over as many new symbols, every one sized and placed (the account, clock, asset
  rules and bars come from the worker's caches and batched prefetches, then one submit). Reports orders/s (signals
  / time until the last order reached the fake), p50/p99 of XADD -> order at the fake, the broker requests
  per order (every request the fake saw during the burst, 429s included) and the workers' CPU time per order
  (user + system of the worker processes during the burst, from /proc: Linux).
* refusal-heavy: `--signals` signals over `--symbols` other symbols, each symbol's first opening a trade and every
  later one refused as "one active trade per symbol" (a Redis hot-state read, a PostgreSQL read and one insert,
  no broker call). Reports signals/s (until every signal row is stored) and p50/p99 of XADD -> stored row.

`--rate-limit N`: the fake enforces N requests a minute (429 beyond it) and the workers share it
(ALPACA_RATE_LIMIT_PER_MINUTE = N / workers); without it neither limits. The fake is a Python server sharing this
machine's cores. Prints a table; writes bench/results/bus-<timestamp>.json. Workers, Redis keys and the
database are always cleaned up.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.bus.redis_streams import RedisBus  # noqa: E402
from backend.domain.model import Side, Signal  # noqa: E402
from backend.execution.executor import client_order_id  # noqa: E402
from backend.store.db import run_migrations  # noqa: E402
from tests.fake_alpaca import Asset, FakeAlpaca  # noqa: E402

PG = "postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/0"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def ms(seconds: list[float], p: float) -> float:
    return round(1000 * pct(seconds, p), 2)


class Run:
    def __init__(self, db_url: str, fake: FakeAlpaca, workers: int, logs: Path, rate_limit: float | None) -> None:
        self.prefix = f"bench:{secrets.token_hex(4)}:"
        self.db = sa.create_engine(db_url)
        self.bus = RedisBus(REDIS, "workers", prefix=self.prefix)
        env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": REDIS, "REDIS_PREFIX": self.prefix,
               "AUTO_MIGRATE": "false", "LOG_LEVEL": "info",
               "SIZING_POLICY": "fixed", "SIZING_FIXED_EXPOSURE": "0.0002",  # every signal sized: 15,000 symbols fit
               **{k.upper(): str(v) for k, v in fake.settings().items()}, "ALPACA_TIMEOUT_SECONDS": "10",
               "ALPACA_RATE_LIMIT_PER_MINUTE": str(rate_limit / workers if rate_limit else 600_000)}
        self.logs = [logs / f"{self.prefix.replace(':', '-')}{i}.log" for i in range(workers)]
        self.procs: list[subprocess.Popen] = []
        atexit.register(self.close)  # also when start-up fails half-way
        for path in self.logs:
            with open(path, "w") as log:
                self.procs.append(subprocess.Popen([str(Path(sys.executable).with_name("sizer")), "worker"], env=env,
                                                   cwd=logs, stdout=log, stderr=subprocess.STDOUT))
        self.n = 0
        deadline = time.monotonic() + 60
        while not all("sizer worker ready" in path.read_text() for path in self.logs):
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                raise RuntimeError("workers did not start: " + " ".join(p.read_text()[-800:] for p in self.logs))
            time.sleep(0.1)

    def signals(self, count: int, symbols: list[str]) -> list[Signal]:
        out = [Signal(f"{self.prefix}{self.n + i}", symbols[i % len(symbols)], Side.BUY, 0.8, stop_price=95.0)
               for i in range(count)]
        self.n += count
        return out

    def stored(self) -> int:
        with self.db.connect() as c:
            return c.scalar(sa.text("SELECT count(*) FROM signal"))

    def wait_stored(self, total: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while (n := self.stored()) < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {n} of {total} signals were handled")
            time.sleep(0.05)  # the polls share the cores with the workers; the times come from the rows

    def backlog(self, signals: list[Signal]) -> dict[str, float]:
        """XADD every signal at once; returns when each was sent (wall clock)."""
        sent = time.time()
        with self.bus.client.pipeline(transaction=False) as pipe:
            for s in signals:
                pipe.xadd(self.bus.stream("signals"), {"event": json.dumps(s.to_event())})
            pipe.execute()
        return {s.signal_id: sent for s in signals}

    def cpu_seconds(self) -> float:
        """CPU time the workers have used (user + system, from /proc)."""
        ticks = 0
        for p in self.procs:
            with open(f"/proc/{p.pid}/stat") as f:
                ticks += sum(int(v) for v in f.read().rsplit(")", 1)[1].split()[11:13])
        return ticks / os.sysconf("SC_CLK_TCK")

    def opening(self, count: int, symbols: list[str], fake: FakeAlpaca) -> dict:
        requests, throttled, cpu = len(fake.requests), fake.throttled, self.cpu_seconds()
        signals = self.signals(count, symbols)
        sent = self.backlog(signals)
        ids = {client_order_id(s.signal_id): s.signal_id for s in signals}
        deadline = time.monotonic() + 900
        while (placed := sum(1 for o in list(fake.orders.values()) if o.client_order_id in ids)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {placed} of {count} signals were placed")
            time.sleep(0.05)  # the polls share the cores with the workers; the times come from the orders
        cpu = self.cpu_seconds() - cpu
        to_order = [o.created_at.timestamp() - sent[ids[o.client_order_id]] for o in list(fake.orders.values())
                    if o.client_order_id in ids]
        seconds = max(to_order)
        return {"signals": count, "seconds": round(seconds, 3), "orders_per_s": count / seconds,
                "order_p50_ms": ms(to_order, 0.5), "order_p99_ms": ms(to_order, 0.99),
                "requests_per_order": (len(fake.requests) - requests) / count, "throttled": fake.throttled - throttled,
                "worker_cpu_ms_per_order": round(1000 * cpu / count, 2)}

    def refusals(self, count: int, symbols: list[str]) -> dict:
        before = self.stored()
        sent = self.backlog(self.signals(count, symbols))
        self.wait_stored(before + count)
        with self.db.connect() as c:
            rows = c.execute(sa.text("SELECT signal_id, received_at FROM signal WHERE signal_id = ANY(:ids)"),
                             {"ids": list(sent)}).all()
        to_store = [r.received_at.replace(tzinfo=timezone.utc).timestamp() - sent[r.signal_id] for r in rows]
        seconds = max(to_store)
        return {"signals": count, "seconds": round(seconds, 3), "signals_per_s": count / seconds,
                "store_p50_ms": ms(to_store, 0.5), "store_p99_ms": ms(to_store, 0.99)}

    def close(self) -> None:
        atexit.unregister(self.close)
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        keys = list(self.bus.client.scan_iter(f"{self.prefix}*"))
        if keys:
            self.bus.client.delete(*keys)
        self.bus.client.close()
        self.db.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    ap.add_argument("--latency-ms", type=float, nargs="+", default=[0, 50], help="the fake's delay per request")
    ap.add_argument("--jitter-ms", type=float, default=10.0, help="+- uniform jitter on a non-zero latency")
    ap.add_argument("--rate-limit", type=float, default=None, help="requests/min the fake allows (default: none)")
    ap.add_argument("--burst", type=int, default=500, help="opening signals, one symbol each")
    ap.add_argument("--signals", type=int, default=2000, help="signals in the refusal-heavy backlog")
    ap.add_argument("--symbols", type=int, default=16, help="its distinct symbols (each opens one trade)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    fake = FakeAlpaca(cash=1e12, rate_limit_per_minute=args.rate_limit).start()
    fake.auto_fill = True
    runs = [(lat, w) for lat in args.latency_ms for w in args.workers]
    symbols = {run: ([f"O{i}-{j:04d}" for j in range(args.burst)], [f"R{i}-{j:04d}" for j in range(args.symbols)])
               for i, run in enumerate(runs)}
    for opening, refusing in symbols.values():
        for symbol in opening + refusing:
            fake.assets[symbol] = Asset(symbol, price=100.0)
    logs = ROOT / "bench" / "results"
    logs.mkdir(parents=True, exist_ok=True)
    results = []
    for latency, workers in runs:
        fake.latency_s, fake.jitter_s = latency / 1000, (args.jitter_ms / 1000 if latency else 0.0)
        db = f"sizer_bench_{secrets.token_hex(4)}"
        with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{db}"')
        url = f"postgresql+psycopg://{PG}/{db}"
        run = None
        try:
            run_migrations(url)
            run = Run(url, fake, workers, logs, args.rate_limit)
            opening, refusing = symbols[(latency, workers)]
            results.append({"latency_ms": latency, "workers": workers, "load_at_start": os.getloadavg()[0],
                            "opening": run.opening(args.burst, opening, fake),
                            "refusals": run.refusals(args.signals, refusing)})
        finally:
            if run is not None:
                run.close()
            with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    fake.stop()

    print(f"\nopening: {args.burst} signals over as many symbols, each placing an order; refusal-heavy: "
          f"{args.signals} over {args.symbols} symbols (a symbol's first places an order, the rest are refused); "
          f"rate limit {args.rate_limit or 'none'}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'latency':>8}{'workers':>8}{'load':>6} | {'orders/s':>9}{'order p50':>10}{'order p99':>10}{'req/order':>10}"
          f"{'429s':>6}{'cpu ms':>7} | {'signals/s':>9}{'store p50':>10}{'store p99':>10}")
    for r in results:
        o, f = r["opening"], r["refusals"]
        print(f"{r['latency_ms']:>6g}ms{r['workers']:>8}{r['load_at_start']:>6.1f} | {o['orders_per_s']:>9.0f}"
              f"{o['order_p50_ms']:>10.0f}{o['order_p99_ms']:>10.0f}{o['requests_per_order']:>10.2f}{o['throttled']:>6}{o['worker_cpu_ms_per_order']:>7.1f} | "
              f"{f['signals_per_s']:>9.0f}{f['store_p50_ms']:>10.1f}{f['store_p99_ms']:>10.1f}")
    out = logs / f"bus-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
                               "results": results}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
