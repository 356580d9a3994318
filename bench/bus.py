"""Benchmark signals through Redis Streams to `sizer worker` processes, end to end.

Run on demand (not part of the test suite), from the project root, with the local Redis and PostgreSQL:

    .venv/bin/python bench/bus.py [--workers 1 2] [--signals 2000] [--symbols 16] [--rate 50] [--latency-signals 400]

What it does: creates a scratch database sizer_bench_<random> on 127.0.0.1:5432 (migrated), starts the fake
Alpaca server of the tests in this process (orders fill at once) with `--symbols` tradable symbols, and for each
worker count starts that many `sizer worker` subprocesses (BROKER=alpaca against the fake, their own Redis key
prefix), waits until they are ready, then:

* throughput: XADDs `--signals` signals at once (a backlog) and times until every one has its signal row in
  PostgreSQL (signals/s = signals / that time);
* latency: XADDs `--latency-signals` more, over `--latency-symbols` other symbols, at a steady `--rate` per
  second and reports p50/p99 of signal -> stored (XADD to the signal row's received_at, every signal) and
  signal -> order (XADD to the order's arrival at the fake, the signals that opened a trade).

The mix is stated, not hidden: signal i is a buy of symbol i mod `--symbols`, so the first signal per symbol
opens a trade (risk decision with the broker's account, bars and asset, then the order: about five HTTP calls to
the fake) and every later one is refused as "one active trade per symbol" (a Redis hot-state read, a PostgreSQL
read and one insert, no broker call). With `--symbols` >= the number of signals every signal places an order.
The fake Alpaca is a Python server sharing this machine's cores. Prints a table; writes
bench/results/bus-<timestamp>.json. Workers, Redis keys and the database are always cleaned up.
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
from datetime import datetime
from pathlib import Path

import psycopg
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.bus.redis_streams import RedisBus  # noqa: E402
from backend.domain.model import Side, Signal  # noqa: E402
from backend.store.db import run_migrations  # noqa: E402
from tests.fake_alpaca import Asset, FakeAlpaca  # noqa: E402

PG = "postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/0"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


class Run:
    def __init__(self, db_url: str, fake: FakeAlpaca, workers: int, logs: Path) -> None:
        self.prefix = f"bench:{secrets.token_hex(4)}:"
        self.db = sa.create_engine(db_url)
        self.bus = RedisBus(REDIS, "workers", prefix=self.prefix)
        env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": REDIS, "REDIS_PREFIX": self.prefix,
               "AUTO_MIGRATE": "false", "LOG_LEVEL": "info",
               "SIZING_POLICY": "fixed", "SIZING_FIXED_EXPOSURE": "0.02",  # every signal sized: 100 symbols fit
               **{k.upper(): str(v) for k, v in fake.settings().items()}, "ALPACA_TIMEOUT_SECONDS": "10"}
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

    def wait_stored(self, total: int, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while (n := self.stored()) < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {n} of {total} signals were handled")
            time.sleep(0.005)
        return time.perf_counter()

    def throughput(self, count: int, symbols: list[str]) -> dict:
        batch = [s.to_event() for s in self.signals(count, symbols)]
        before = self.stored()
        start = time.perf_counter()
        with self.bus.client.pipeline(transaction=False) as pipe:
            for event in batch:
                pipe.xadd(self.bus.stream("signals"), {"event": json.dumps(event)})
            pipe.execute()
        seconds = self.wait_stored(before + count) - start
        return {"signals": count, "seconds": round(seconds, 3), "signals_per_s": count / seconds}

    def latency(self, count: int, symbols: list[str], rate: float, fake: FakeAlpaca) -> dict:
        sent: dict[str, float] = {}
        before = self.stored()
        start = time.perf_counter()
        for i, s in enumerate(self.signals(count, symbols)):
            while time.perf_counter() < start + i / rate:
                time.sleep(0.0005)
            sent[s.signal_id] = time.time()
            self.bus.publish("signals", s.to_event())
        self.wait_stored(before + count)
        with self.db.connect() as c:
            rows = c.execute(sa.text("SELECT s.signal_id, s.received_at, t.client_order_id FROM signal s "
                                     "LEFT JOIN trade t ON t.signal_id = s.signal_id "
                                     "WHERE s.signal_id = ANY(:ids)"), {"ids": list(sent)}).all()
        arrived = {o.client_order_id: o.created_at.timestamp() for o in list(fake.orders.values())}
        to_store = [(r.received_at.replace(tzinfo=None) - datetime.utcfromtimestamp(sent[r.signal_id])).total_seconds()
                    for r in rows]
        to_order = [arrived[r.client_order_id] - sent[r.signal_id] for r in rows if r.client_order_id in arrived]
        ms = lambda xs, p: round(1000 * pct(xs, p), 2)  # noqa: E731
        return {"signals": count, "rate": rate, "orders": len(to_order),
                "store_p50_ms": ms(to_store, 0.5), "store_p99_ms": ms(to_store, 0.99),
                "order_p50_ms": ms(to_order, 0.5), "order_p99_ms": ms(to_order, 0.99)}

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
    ap.add_argument("--signals", type=int, default=2000, help="signals in the throughput backlog")
    ap.add_argument("--symbols", type=int, default=16, help="distinct symbols (each opens one trade)")
    ap.add_argument("--rate", type=float, default=50.0, help="signals per second in the latency phase")
    ap.add_argument("--latency-signals", type=int, default=400, help="signals in the latency phase")
    ap.add_argument("--latency-symbols", type=int, default=100, help="its own symbols (as many orders)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    fake = FakeAlpaca(cash=1e12).start()
    fake.auto_fill = True
    backlog = [f"B{i:04d}" for i in range(args.symbols)]
    steady = [f"L{i:04d}" for i in range(args.latency_symbols)]
    for symbol in backlog + steady:
        fake.assets[symbol] = Asset(symbol, price=100.0)
    logs = ROOT / "bench" / "results"
    logs.mkdir(parents=True, exist_ok=True)
    results = {}
    for workers in args.workers:
        db = f"sizer_bench_{secrets.token_hex(4)}"
        with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{db}"')
        url = f"postgresql+psycopg://{PG}/{db}"
        run = None
        try:
            run_migrations(url)
            run = Run(url, fake, workers, logs)
            results[workers] = {"throughput": run.throughput(args.signals, backlog),
                                "latency": run.latency(args.latency_signals, steady, args.rate, fake)}
        finally:
            if run is not None:
                run.close()
            with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    fake.stop()

    print(f"\nbacklog: {args.signals} signals over {args.symbols} symbols; steady: {args.latency_signals} at "
          f"{args.rate:g}/s over {args.latency_symbols} symbols (a symbol's first signal places an order, the rest "
          f"are refused as busy)")
    print(f"{'workers':>8}{'signals/s':>11}{'store p50':>11}{'store p99':>11}{'order p50':>11}{'order p99':>11}"
          f"{'orders':>8}")
    for workers, r in results.items():
        t, lat = r["throughput"], r["latency"]
        print(f"{workers:>8}{t['signals_per_s']:>11.0f}{lat['store_p50_ms']:>11.2f}{lat['store_p99_ms']:>11.2f}"
              f"{lat['order_p50_ms']:>11.2f}{lat['order_p99_ms']:>11.2f}{lat['orders']:>8}")
    out = logs / f"bus-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "results": results}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
