"""Benchmark POST /v1/decisions against a real `sizer serve` backed by PostgreSQL.

Run on demand (not part of the test suite), from the project root:

    .venv/bin/python bench/decisions.py [--seconds 10] [--connections 8] [--warmup 2] [--repeats 3] [--no-pin]

What it does: creates a scratch database sizer_bench_<random> on 127.0.0.1:5432, starts
`python -m backend.cli serve` on a free port against it (SIM_BAR_SECONDS=3600 so the simulated
clock does not tick; the Q-learning policy pools its estimates and ranks the whole menu on every decision, with or
without experience; --policy ppo serves the shipped checkpoint instead), waits for
GET /healthz, then drives it with a small raw asyncio HTTP/1.1 keep-alive client: N connections in
one process, each sending requests back to back (closed loop), latency per request from
perf_counter_ns. The named baseline, measured in the same run: the same POST to a bare FastAPI app
(bench/bare_decisions.py: the service's request and response models and nothing behind them, under uvicorn on the
same CPU); GET /healthz (a `SELECT 1` in the service) is measured beside it. After a warmup, the measured phases
alternate decisions / bare / healthz --repeats times; each figure reported is the median over the repeats, and
the throughput ratio decisions / bare is the headline. By default the server is pinned to CPU 0
and the load generator to CPU 1 (PostgreSQL is not pinned). A table is printed and a JSON result is
written to bench/results/decisions-<timestamp>.json. The server and database are always cleaned up.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Callable

import psycopg

ROOT = Path(__file__).resolve().parents[1]
PG = "postgres@127.0.0.1:5432"


def make_bodies(n: int = 300) -> list[bytes]:
    rng = random.Random(42)
    return [json.dumps({"symbol": rng.choice(["SP500", "NASDAQ"]), "side": rng.choice(["buy", "sell"]),
                        "confidence": round(rng.random(), 3)}).encode() for _ in range(n)]


def requests_for(kind: str, port: int) -> list[bytes]:
    """healthz: GET /healthz; decisions and bare: POST /v1/decisions (the service's, the bare app's)."""
    host = f"Host: 127.0.0.1:{port}\r\n"
    if kind == "healthz":
        return [f"GET /healthz HTTP/1.1\r\n{host}\r\n".encode()]
    return [(f"POST /v1/decisions HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
             f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in make_bodies()]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise RuntimeError(f"response without Content-Length: {head!r}")
    return status, await reader.readexactly(length)


def check(kind: str, status: int, body: bytes, policy: str) -> str | None:
    """None if the response is as expected, else a short description of what is wrong."""
    if status != 200:
        return f"status {status}: {body[:200]!r}"
    doc = json.loads(body)
    if kind in ("decisions", "bare") and (doc.get("policy") != policy or not isinstance(doc.get("approved"), bool)
                                or not isinstance(doc.get("size_usd"), (int, float))):
        return f"unexpected decision: {body[:300]!r}"
    if kind == "healthz" and doc.get("status") != "ok":
        return f"unhealthy: {body[:300]!r}"
    return None


async def phase(kind: str, port: int, connections: int, seconds: float, policy: str, sample_every: int = 20) -> dict:
    """Closed loop on `connections` keep-alive connections for `seconds`; returns the phase's figures."""
    reqs = requests_for(kind, port)
    latencies: list[int] = []
    errors: list[str] = []
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    for _, w in conns:
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.perf_counter_ns()
    deadline = start + int(seconds * 1e9)

    async def worker(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = i
        while time.perf_counter_ns() < deadline:
            t0 = time.perf_counter_ns()
            writer.write(reqs[n % len(reqs)])
            try:
                status, body = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError) as exc:  # the connection is gone: stop this worker
                errors.append(f"connection {i}: {exc!r}")
                return
            latencies.append(time.perf_counter_ns() - t0)
            if status != 200 or n % sample_every == 0:
                problem = check(kind, status, body, policy)
                if problem:
                    errors.append(problem)
            n += connections

    await asyncio.gather(*(worker(i, r, w) for i, (r, w) in enumerate(conns)))
    elapsed = (time.perf_counter_ns() - start) / 1e9
    for _, w in conns:
        w.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6

    return {"requests": len(latencies), "seconds": round(elapsed, 3), "rps": len(latencies) / elapsed,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": latencies[-1] / 1e6,
            "errors": len(errors), "error_examples": errors[:3]}


def median_of(runs: list[dict]) -> dict:
    keys = ["requests", "rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors"]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_ready(name: str, proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready")
        if ready():
            return
        time.sleep(0.25)
    raise RuntimeError(f"{name} was not ready within {timeout:.0f} s")


async def measure(args, ports: dict[str, int]) -> dict:
    runs: dict[str, list[dict]] = {"decisions": [], "bare": [], "healthz": []}
    for kind in runs:
        await phase(kind, ports[kind], args.connections, args.warmup, args.policy)
    for _ in range(args.repeats):
        for kind, results in runs.items():  # alternate, so drift hits them alike
            results.append(await phase(kind, ports[kind], args.connections, args.seconds, args.policy))
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    ap.add_argument("--connections", type=int, default=8, help="concurrent keep-alive connections")
    ap.add_argument("--warmup", type=float, default=2.0, help="warmup seconds per endpoint")
    ap.add_argument("--repeats", type=int, default=3, help="measured phases per endpoint (median reported)")
    ap.add_argument("--policy", choices=("qlearning", "ppo"), default="qlearning",
                    help="SIZING_POLICY of the served instance (ppo: the shipped checkpoint)")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server/CPU0, client/CPU1")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on kill/timeout as on Ctrl-C
    pin = args.pin and len(os.sched_getaffinity(0)) >= 2 and {0, 1} <= os.sched_getaffinity(0)

    db = f"sizer_bench_{secrets.token_hex(4)}"
    port, bare_port = free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": f"postgresql+psycopg://{PG}/{db}", "PORT": str(port),
           "HOST": "127.0.0.1", "LOG_LEVEL": "warning", "SIM_BAR_SECONDS": "3600",
           "SIZING_POLICY": args.policy}
    with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    proc = bare = None
    try:
        if pin:  # the servers inherit CPU 0 from this process, which then moves itself to CPU 1
            os.sched_setaffinity(0, {0})
        proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve"], cwd=ROOT, env=env)
        bare = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.bare_decisions:app", "--host", "127.0.0.1",
                                 "--port", str(bare_port), "--log-level", "warning"], cwd=ROOT, env=env)
        if pin:
            os.sched_setaffinity(0, {1})
        wait_ready("the server", proc, lambda: healthy(port))
        wait_ready("the bare app", bare, lambda: listening(bare_port))
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
        runs = asyncio.run(measure(args, {"decisions": port, "healthz": port, "bare": bare_port}))
    finally:
        for server in (proc, bare):
            if server is not None and server.poll() is None:
                server.send_signal(signal.SIGINT)
                try:
                    server.wait(10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
        with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    med = {k: median_of(v) for k, v in runs.items()}
    ratio = med["decisions"]["rps"] / med["bare"]["rps"]
    print(f"\n{args.connections} connections, {args.repeats} x {args.seconds:g} s per endpoint, "
          f"pinning: {'server CPU0 / client CPU1' if pin else 'none'}; medians of the repeats")
    print(f"{'endpoint':<20}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'errors':>8}")
    for name, m in (("POST /v1/decisions", med["decisions"]), ("bare FastAPI", med["bare"]),
                    ("GET /healthz", med["healthz"])):
        print(f"{name:<20}{m['requests']:>10.0f}{m['rps']:>10.0f}{m['p50_ms']:>9.2f}{m['p90_ms']:>9.2f}"
              f"{m['p99_ms']:>9.2f}{m['max_ms']:>9.2f}{m['errors']:>8.0f}")
    print(f"decisions / bare FastAPI throughput ratio: {ratio:.2f}")
    for kind, rs in runs.items():
        for r in rs:
            for e in r["error_examples"]:
                print(f"  {kind} error: {e}")

    out = ROOT / "bench" / "results" / f"decisions-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "pinned": bool(pin), "cpus": os.cpu_count(),
                               "median": med, "ratio_decisions_to_bare": ratio, "runs": runs}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 1 if any(r["errors"] for rs in runs.values() for r in rs) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the server and the database are already cleaned up by main's finally
        sys.exit(130)
