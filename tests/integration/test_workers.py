"""`sizer worker` processes against the real local Redis and PostgreSQL and the real alpaca-py clients pointed at the
fake Alpaca server: the API enqueues, workers execute; workers killed with SIGKILL over and over, Redis and
PostgreSQL connections cut and restored. Nothing may be lost, and no order and no reward may happen twice."""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy import func, select

from backend.api.app import create_api
from backend.bootstrap import build_service
from backend.bus.base import SIGNALS
from backend.domain.model import Side, Signal
from backend.execution.executor import client_order_id
from backend.store.tables import OutcomeRow, SignalRow, TradeRow
from tests.conftest import make_settings
from tests.fake_alpaca import Asset, FakeAlpaca
from tests.integration.test_redis_bus import Proxy

SIZER = Path(sys.executable).with_name("sizer")
SYMBOLS = [f"S{i:02d}" for i in range(12)]
KEY = "k3y-for-tests-0123456789"
PATIENCE_S = 120.0  # a deadline for what should take seconds, generous for a loaded machine: never a measure


def wait_for(condition, what: str = "condition"):
    deadline = time.monotonic() + PATIENCE_S
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


class Stack:
    """The fake Alpaca, an in-process API side (trade-update stream, poll, enqueueing) and worker subprocesses."""

    def __init__(self, pg_url: str, redis_url: str, tmp_path: Path) -> None:
        self.fake = FakeAlpaca(cash=10_000_000.0)
        self.broker_latency_s = 0.0

        @self.fake.app.middleware("http")
        async def latency(request, call_next):  # a slower broker keeps messages in flight long enough to kill
            await asyncio.sleep(self.broker_latency_s)
            return await call_next(request)

        self.fake.start()
        self.fake.auto_fill = True
        for symbol in SYMBOLS:
            self.fake.assets[symbol] = Asset(symbol, price=100.0)
        self.pg_url, self.redis_url, self.logs = pg_url, redis_url, tmp_path
        self.prefix = f"test:{uuid.uuid4().hex[:12]}:"
        self.overrides = dict(database_url=pg_url, redis_url=redis_url, redis_prefix=self.prefix, auto_migrate=False,
                              bus_claim_idle_ms=1_000, sizing_policy="fixed", sizing_fixed_exposure=0.1,
                              **self.fake.settings())
        self.api = build_service(make_settings(**self.overrides))
        wait_for(lambda: self.fake.streaming, what="the trade-update stream")
        self.workers: dict[subprocess.Popen, Path] = {}
        self.started = 0

    def env(self, **overrides) -> dict[str, str]:
        values = {**self.overrides, "sim_bar_seconds": 3600, "log_level": "info", **overrides}
        return {**os.environ, **{k.upper(): str(v) for k, v in values.items()}}

    def start_worker(self, **overrides) -> subprocess.Popen:
        self.started += 1
        path = self.logs / f"worker-{self.started}.log"
        with open(path, "w") as log:
            proc = subprocess.Popen([str(SIZER), "worker"], env=self.env(**overrides), cwd=self.logs, stdout=log,
                                    stderr=subprocess.STDOUT)
        self.workers[proc] = path
        return proc

    def ready(self) -> list[subprocess.Popen]:
        return [p for p, path in self.workers.items() if "sizer worker ready" in path.read_text()]

    def kill(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        del self.workers[proc]

    def chaos(self, rng: random.Random, waves: list[list[Signal]]) -> int:
        """For each wave: wait for two ready workers, publish the wave, SIGKILL a random ready worker 0.05-0.2 s
        later and start a replacement. Returns how many kills fell while a signal published was unhandled: a
        signal that opens a trade is stored after three broker requests, each delayed by broker_latency_s, so a
        wave that opens some keeps the workers busy past the kill however fast or loaded the machine is."""
        busy_kills, published = 0, set()
        for wave in waves:
            wait_for(lambda: len(self.ready()) >= 2, what="two ready workers")
            self.publish(*wave)
            published |= {s.signal_id for s in wave}
            time.sleep(rng.uniform(0.05, 0.2))
            busy_kills += self.count(SignalRow) < len(published)
            self.kill(rng.choice(self.ready()))
            self.start_worker()
        return busy_kills

    def log_text(self) -> str:
        return "".join(p.read_text() for p in sorted(self.logs.glob("worker-*.log")))

    def publish(self, *signals: Signal) -> None:
        for s in signals:
            self.api.bus.publish(SIGNALS, s.to_event())

    def count(self, model, *where) -> int:
        with self.api.store.session() as s:
            return s.scalar(select(func.count()).select_from(model).where(*where))

    def trades(self) -> list[TradeRow]:
        with self.api.store.session() as s:
            return list(s.scalars(select(TradeRow).order_by(TradeRow.id)))

    def entry_orders(self) -> list[str]:
        return [o.client_order_id for o in self.fake.orders.values() if o.parent is None]

    def stop_workers(self) -> None:
        for proc in list(self.workers):  # SIGTERM: the clean shutdown
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            del self.workers[proc]

    def close(self) -> None:
        self.stop_workers()
        self.api.close()
        self.fake.stop()
        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(f"{self.prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def stack(pg_url, redis_url, tmp_path):
    s = Stack(pg_url, redis_url, tmp_path)
    yield s
    s.close()


def buy(signal_id: str, symbol: str) -> Signal:
    return Signal(signal_id, symbol, Side.BUY, 0.8, stop_price=95.0, target_price=110.0)


def assert_one_order_per_trade(stack: Stack, n_signals: int) -> list[TradeRow]:
    """Every signal stored once; one trade per symbol, open, with exactly one entry order at the broker."""
    assert stack.count(SignalRow) == n_signals
    trades = stack.trades()
    assert sorted(t.symbol for t in trades) == sorted(SYMBOLS), [(t.symbol, t.status, t.reason) for t in trades]
    assert all(t.status == "open" for t in trades), [(t.id, t.status, t.reason) for t in trades]
    assert sorted(stack.entry_orders()) == sorted(t.client_order_id for t in trades)
    assert {s: q for s, (q, _) in stack.fake.positions.items()} == {t.symbol: t.quantity for t in trades}
    return trades


@asynccontextmanager
async def api_client(stack: Stack, **overrides):
    """The API (create_api, without its clock) on the stack's settings, and a client to it with the API key."""
    app = create_api(make_settings(**{**stack.overrides, "sizer_api_key": KEY, **overrides}), run_clock=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer",
                                     headers={"X-API-Key": KEY}) as client:
            yield client


async def handled(client: httpx.AsyncClient, signal_id: str) -> dict:
    """GET /v1/signals/{signal_id} once a worker has handled it."""
    deadline = time.monotonic() + PATIENCE_S
    while (r := await client.get(f"/v1/signals/{signal_id}")).status_code == 404:
        assert time.monotonic() < deadline, f"no worker handled {signal_id}"
        await asyncio.sleep(0.05)
    return r.json()


async def test_the_api_enqueues_and_a_worker_executes(stack):
    worker = stack.start_worker()
    async with api_client(stack) as client:
        body = {"signal_id": "q-1", "symbol": "S00", "side": "buy", "confidence": 0.8, "stop_price": 95.0}
        r = await client.post("/v1/signals", json=body)
        assert r.status_code == 202 and r.json() == {"signal_id": "q-1", "status": "queued"}
        assert (await client.post("/v1/signals", json={**body, "confidence": 2})).status_code == 422
        # what the risk manager would refuse is answered 422 before queueing, as without workers
        for field, bad in (("symbol", "NOBARS"), ("stop_price", 105.0), ("target_price", 90.0)):
            r = await client.post("/v1/signals", json={**body, "signal_id": f"bad-{field}", field: bad})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field], r.json()
        state = await handled(client, "q-1")
    assert stack.api.bus.client.xlen(f"{stack.prefix}{SIGNALS}") == 1  # the refused ones were never queued
    assert state["status"] == "placed" and state["trade_id"] is not None and state["decision"]["approved"]
    assert stack.entry_orders() == [client_order_id("q-1")]
    hot = redis.Redis.from_url(stack.redis_url, decode_responses=True).hgetall(f"{stack.prefix}trade:S00")
    assert hot["id"] == str(state["trade_id"]) and hot["client_order_id"] == client_order_id("q-1")
    assert hot["rl_state_key"] == state["decision"]["state_key"] and "rl_action_key" in hot
    wait_for(lambda: stack.trades()[0].status == "open", what="the entry fill through the bus")
    worker.terminate()
    assert worker.wait(timeout=PATIENCE_S) == 0  # SIGTERM ends the consumer loop cleanly
    del stack.workers[worker]


async def test_input_only_a_worker_can_find_bad_is_rejected_at_once_and_dead_letters_are_counted(stack):
    direct = stack.api.bus.client
    stream = f"{stack.prefix}{SIGNALS}"
    async with api_client(stack) as client:
        body = {"signal_id": "m-1", "symbol": "S01", "side": "buy", "confidence": 0.8, "stop_price": 95.0}
        assert (await client.post("/v1/signals", json=body)).status_code == 202  # 95 is below the price, 100
        stack.fake.move("S01", 90.0)  # before a worker takes the signal, the price falls through its stop
        direct.xadd(stream, {"not": "an event"})  # a producer's bug: nothing can handle it
        stack.start_worker()
        state = await handled(client, "m-1")
        wait_for(lambda: direct.xlen(f"{stream}:dead") == 1 and direct.xpending(stream, "workers")["pending"] == 0,
                 what="the signal acknowledged and the bad entry dead-lettered")
        health = await client.get("/healthz")
        metrics = (await client.get("/metrics")).text
    assert state["status"] == "rejected" and state["trade_id"] is None
    assert state["reason"].startswith("stop_price: a buy stop must be on the losing side of 90"), state["reason"]
    log = stack.log_text()
    assert log.count("rejected m-1") == 1 and "will be retried" not in log and "Traceback" not in log, log
    assert stack.entry_orders() == []
    [(_, dead)] = direct.xrange(f"{stream}:dead")
    assert dead["error"].startswith("undecodable entry")
    # dead letters are an operator's to look at, not a fault of the service: it stays healthy
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["dead_letters"] == {"signals": 1, "fills": 0, "order_ends": 0}
    assert 'sizer_bus_dead_letters{topic="signals"} 1.0' in metrics
    assert 'sizer_bus_dead_letters{topic="fills"} 0.0' in metrics


def test_a_broker_outage_is_waited_out_and_the_signal_then_executed_once(stack):
    stack.start_worker()
    wait_for(stack.ready, what="the worker")
    stack.fake.fail_next("GET", "/v2/account", 503, times=8)  # longer than two rounds of the broker's own retries
    stack.publish(buy("o-1", "S02"))
    wait_for(lambda: stack.count(SignalRow) == 1 and stack.trades()[0].status == "open", what="the signal executed")
    assert stack.log_text().count("waits for a dependency") >= 2  # BrokerUnavailable twice, retried in place
    assert stack.entry_orders() == [client_order_id("o-1")]
    assert stack.api.bus.client.xlen(f"{stack.prefix}{SIGNALS}:dead") == 0


async def test_without_redis_the_api_answers_503_and_queues_nothing(stack):
    async with api_client(stack, redis_url="redis://127.0.0.1:1/0") as client:
        r = await client.post("/v1/signals", json={"signal_id": "d-1", "symbol": "S00", "side": "buy",
                                                   "confidence": 0.8})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["detail"].startswith("signal not queued: Redis did not take the signals event")


def test_a_worker_killed_inside_a_submit_leaves_one_order(stack):
    victim = stack.start_worker(alpaca_timeout_seconds=60)
    stack.fake.delay_next_submit(60)  # the order is created, the answer never comes before the kill
    stack.publish(buy("k-1", "S00"))
    wait_for(lambda: client_order_id("k-1") in stack.entry_orders(), what="the order at the broker")
    stack.kill(victim)
    stack.start_worker()  # reclaims the entry after BUS_CLAIM_IDLE_MS, replays it: the order is found, not re-sent
    wait_for(lambda: stack.count(SignalRow) == 1 and stack.trades()[0].status == "open", what="the replay")
    assert stack.entry_orders() == [client_order_id("k-1")]


def test_workers_killed_again_and_again_lose_nothing_and_double_nothing(stack):
    rng = random.Random(4)
    stack.broker_latency_s = 0.15
    for _ in range(3):
        stack.start_worker()
    wait_for(lambda: len(stack.ready()) == 3, what="the workers")
    # 12 symbols x 3 signals: the first per symbol opens, the others are refused (one active trade per symbol);
    # a third of them is published twice (a client retrying). Five waves, each over its own symbols.
    signals = [buy(f"r-{i}", SYMBOLS[i % len(SYMBOLS)]) for i in range(36)]
    waves = [[s for s in signals + signals[::3] if s.symbol in SYMBOLS[k::5]] for k in range(5)]
    assert stack.chaos(rng, waves) >= 3
    wait_for(lambda: stack.count(SignalRow) == len(signals), what="every signal handled")
    trades = wait_for(lambda: all(t.status == "open" for t in stack.trades()) and stack.trades(), what="fills")
    assert_one_order_per_trade(stack, len(signals))
    assert stack.count(SignalRow, SignalRow.status == "rejected") == len(signals) - len(SYMBOLS)

    for symbol in SYMBOLS:  # every stop leg fills: each close travels as a fill event, while workers die
        stack.fake.move(symbol, 94.0)
        if rng.random() < 0.3 and stack.ready():
            stack.kill(rng.choice(stack.ready()))
            stack.start_worker()
    wait_for(lambda: stack.count(OutcomeRow) == len(trades), what="every close rewarded")
    assert all(t.status == "closed" for t in stack.trades())
    assert stack.api.store.q_table.agent().total_updates == len(trades)  # each reward applied once


def test_workers_ride_out_a_redis_cut_and_postgresql_connections_killed(stack, pg_url, caplog):
    url = redis.connection.parse_url(stack.redis_url)
    proxy = Proxy((url.get("host", "127.0.0.1"), url.get("port", 6379)))
    try:
        for _ in range(2):
            stack.start_worker(redis_url=f"redis://127.0.0.1:{proxy.port}/{url.get('db', 0)}")
        stack.publish(buy("c-0", "S00"))
        wait_for(lambda: stack.count(SignalRow) == 1, what="the first signal")
        proxy.stop()  # the workers lose Redis; the API side still reaches it and keeps enqueueing
        stack.publish(*(buy(f"c-{i}", SYMBOLS[i % len(SYMBOLS)]) for i in range(1, 12)))
        wait_for(lambda: stack.log_text().count("Redis unreachable") >= 2, what="the workers to report the cut")
        wait_for(proxy.restarted, what="the proxy's port to be free again")
        wait_for(lambda: stack.count(SignalRow) == 12, what="the backlog after Redis came back")

        admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
        kill_all = sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        signals = [buy(f"p-{i}", SYMBOLS[i % len(SYMBOLS)]) for i in range(30)]
        for batch in (signals[:10], signals[10:20], signals[20:]):
            stack.publish(*batch)
            with admin.connect() as conn:  # every worker's (and the API side's) connections die mid-work
                conn.execute(kill_all)
            time.sleep(0.2)
        admin.dispose()
        wait_for(lambda: stack.count(SignalRow) == 42, what="every signal after the connections were killed")
        wait_for(lambda: all(t.status == "open" for t in stack.trades()), what="fills")
        assert_one_order_per_trade(stack, 42)
        assert all(p.poll() is None for p in stack.workers), "a worker died"
    finally:
        stack.stop_workers()
        proxy.stop()


def test_a_429_storm_slows_the_worker_down_and_loses_no_signal(stack):
    """The fake allows 300 requests a minute in bursts of 3; the worker is told it may send far more, so most of
    a burst of signals (each symbol twice, several at once on the worker's threads) meets 429s. They pause the
    worker instead of failing anything: every signal is handled once, every symbol gets one trade and one
    order, and nothing is dead-lettered."""
    stack.fake.rate_limit_per_minute, stack.fake.rate_burst = 300.0, 3
    stack.start_worker(alpaca_rate_limit_per_minute=600_000, worker_concurrency=8)
    signals = [buy(f"rl-{i}", SYMBOLS[i % len(SYMBOLS)]) for i in range(2 * len(SYMBOLS))]
    stack.publish(*signals)
    wait_for(lambda: stack.count(SignalRow) == len(signals) and stack.count(TradeRow) == len(SYMBOLS)
             and all(t.status == "open" for t in stack.trades()), what="every signal handled")
    assert stack.fake.throttled > 0
    assert_one_order_per_trade(stack, len(signals))
    assert "rate limited (HTTP 429)" in stack.log_text()
    assert stack.api.bus.dead_letters(("signals",)) == {"signals": 0}
