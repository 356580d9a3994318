"""The Redis Streams bus against the local Redis: acknowledgement, retries, dead letters, work sharing, a consumer
killed mid-event, and a connection that drops and comes back."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from backend.bus.redis_streams import RedisBus
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(claim_idle_ms=300, block_ms=100)
PATIENCE_S = 60.0  # a deadline for what should take a second, generous for a loaded machine: never a measure


@pytest.fixture
def prefix(redis_url):
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"test:{uuid.uuid4().hex[:12]}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def direct(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@contextmanager
def running(*buses: RedisBus):
    stop = threading.Event()
    threads = [threading.Thread(target=bus.run, args=(stop,), daemon=True) for bus in buses]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=PATIENCE_S)
        assert not any(t.is_alive() for t in threads), "run did not stop when asked"


def wait_for(condition):
    deadline = time.monotonic() + PATIENCE_S
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def pending(direct, bus: RedisBus, topic: str) -> int:
    return direct.xpending(bus.stream(topic), bus.group)["pending"]


def test_published_events_are_handled_in_order_and_acknowledged(redis_url, prefix, direct):
    bus, seen = RedisBus(redis_url, "g", prefix=prefix, **FAST), []
    bus.subscribe("fills", seen.append)
    with running(bus):
        for i in range(3):
            bus.publish("fills", {"n": i, "price": 101.25})
        wait_for(lambda: len(seen) == 3)
    assert seen == [{"n": i, "price": 101.25} for i in range(3)]
    assert pending(direct, bus, "fills") == 0


def test_a_failing_event_is_retried_then_dead_lettered(redis_url, prefix, direct):
    bus = RedisBus(redis_url, "g", prefix=prefix, max_deliveries=3, **FAST)
    attempts: dict[str, int] = {}

    def flaky(event):
        attempts[event["id"]] = attempts.get(event["id"], 0) + 1
        if event["id"] == "poison" or attempts[event["id"]] == 1:
            raise ValueError(f"cannot handle {event['id']}")

    bus.subscribe("signals", flaky)
    direct.xadd(bus.stream("signals"), {"garbage": "no event field"})
    with running(bus):
        bus.publish("signals", {"id": "poison"})
        bus.publish("signals", {"id": "transient"})
        wait_for(lambda: bus.dead_letters(("signals",)) == {"signals": 2})
        bus.publish("signals", {"id": "later"})  # its retry needs a reclaim after the dead letter's
        wait_for(lambda: attempts.get("later") == 2 and pending(direct, bus, "signals") == 0)
    assert attempts == {"poison": 3, "transient": 2, "later": 2}  # nothing further happened to the dead letter
    dead = [fields for _, fields in direct.xrange(bus.stream("signals") + ":dead")]
    assert dead[0]["error"].startswith("undecodable entry: KeyError")
    assert dead[1]["error"] == "ValueError: cannot handle poison" and dead[1]["event"] == '{"id": "poison"}'
    assert dead[1]["group"] == "g" and dead[1]["id"]
    assert pending(direct, bus, "signals") == 0


class DependencyDown(Exception):
    pass


def test_a_dependency_outage_is_waited_out_without_spending_deliveries(redis_url, prefix, direct):
    bus = RedisBus(redis_url, "g", prefix=prefix, max_deliveries=2, transient=(DependencyDown,), **FAST)
    failures, seen = iter(range(6)), []

    def needs_the_database(event):
        if next(failures, None) is not None:  # down for the first six attempts, longer than 2 deliveries allow
            raise DependencyDown("connection refused")
        seen.append(event)

    bus.subscribe("signals", needs_the_database)
    with running(bus):
        bus.publish("signals", {"id": "a"})
        bus.publish("signals", {"id": "b"})
        wait_for(lambda: len(seen) == 2)
    assert seen == [{"id": "a"}, {"id": "b"}]  # in order, none dead-lettered, none doubled
    assert direct.xlen(bus.stream("signals") + ":dead") == 0 and pending(direct, bus, "signals") == 0


def test_two_consumers_of_a_group_share_the_work_without_doubles(redis_url, prefix, direct):
    handled: list[tuple[str, int]] = []
    both = threading.Barrier(2, timeout=PATIENCE_S)  # each consumer's first event waits for the other's

    def handle(name: str, event) -> None:
        if name not in {name for name, _ in handled}:
            both.wait()
        handled.append((name, event["n"]))

    # nothing is reclaimed (a slow handler is no dead consumer): a double could only be a fault of the bus
    buses = [RedisBus(redis_url, "executors", prefix=prefix, consumer=f"c{i}", batch=5, claim_idle_ms=60_000,
                      block_ms=100) for i in range(2)]
    for bus in buses:
        bus.subscribe("signals", lambda e, name=bus.consumer: handle(name, e))
    with running(*buses):
        for n in range(200):
            buses[0].publish("signals", {"n": n})
        wait_for(lambda: len(handled) >= 200 and pending(direct, buses[0], "signals") == 0)
    numbers = sorted(n for _, n in handled)
    assert numbers == list(range(200))
    assert {name for name, _ in handled} == {"c0", "c1"}
    assert pending(direct, buses[0], "signals") == 0


VICTIM = """
import sys, time, threading, redis
from backend.bus.redis_streams import RedisBus
from tests.conftest import make_settings
url, prefix = sys.argv[1:]
r = redis.Redis.from_url(url, decode_responses=True)
bus = RedisBus(url, "workers", prefix=prefix, consumer="victim", claim_idle_ms=300, block_ms=100)
def slow(event):
    r.sadd(prefix + "started", event["id"])
    time.sleep(60)
    r.sadd(prefix + "handled", event["id"])
bus.subscribe("signals", slow)
bus.run(threading.Event())
"""


def test_a_consumer_killed_mid_event_has_it_reclaimed_and_handled_once(redis_url, prefix, direct):
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, redis_url, prefix], cwd=ROOT)
    try:
        rescuer = RedisBus(redis_url, "workers", prefix=prefix, consumer="rescuer", **FAST)
        rescuer.publish("signals", {"id": "s-1"})
        wait_for(lambda: direct.sismember(prefix + "started", "s-1"))
        victim.kill()  # SIGKILL: no cleanup, the entry stays pending under "victim"
        victim.wait(timeout=10)
    finally:
        victim.kill()
    calls = []

    def handle(event):
        calls.append(event["id"])
        direct.sadd(prefix + "handled", event["id"])

    rescuer.subscribe("signals", handle)
    with running(rescuer):
        wait_for(lambda: pending(direct, rescuer, "signals") == 0)  # acknowledged: it cannot come back
    assert calls == ["s-1"]
    assert direct.smembers(prefix + "handled") == {"s-1"}
    assert pending(direct, rescuer, "signals") == 0


class Proxy:
    """A TCP proxy to Redis that can be cut and restored, to take the network away from a consumer."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port, self.links = target, 0, []
        self.start()

    def start(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def restarted(self) -> bool:
        """Listening again on its port; False while the port lingers after the cut."""
        try:
            self.start()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Cut every link and stop listening. Sockets are shut down before they are closed: one closed while a
        thread waits in its accept or recv would go on working until that call returns."""
        for s in (self.server, *self.links):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed from the other end already
                pass
            s.close()
        self.links = []

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.links += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            s.close()


def test_the_consumer_survives_a_lost_connection_and_loses_nothing(redis_url, prefix, direct, caplog):
    url = redis.connection.parse_url(redis_url)
    proxy = Proxy((url.get("host", "127.0.0.1"), url.get("port", 6379)))
    bus, seen = RedisBus(f"redis://127.0.0.1:{proxy.port}/{url.get('db', 0)}", "g", prefix=prefix, **FAST), []
    bus.subscribe("fills", lambda e: seen.append(e["n"]))
    publisher = RedisBus(redis_url, "g", prefix=prefix)
    try:
        with running(bus):
            for n in range(5):
                publisher.publish("fills", {"n": n})
            wait_for(lambda: len(seen) == 5)
            proxy.stop()
            for n in range(5, 10):
                publisher.publish("fills", {"n": n})
            wait_for(lambda: caplog.text.count("Redis unreachable") >= 2)  # a reconnection failed, too
            wait_for(proxy.restarted)
            wait_for(lambda: len(seen) >= 10)
    finally:
        proxy.stop()
    assert sorted(seen) == list(range(10))
    assert pending(direct, bus, "fills") == 0


def test_a_connection_killed_by_the_server_is_reopened(redis_url, prefix, direct, caplog):
    bus, seen = RedisBus(redis_url, "g", prefix=prefix, consumer=f"{prefix}victim", **FAST), []
    bus.subscribe("fills", lambda e: seen.append(e["n"]))
    with running(bus):
        bus.publish("fills", {"n": 0})
        wait_for(lambda: seen == [0])

        def kill_its_read() -> bool:
            """Kill the consumer's connection while it waits in XREADGROUP (one killed between two commands is
            reopened by the pool without a word); True once the consumer has reported a lost read."""
            reading = wait_for(lambda: next((c for c in direct.client_list()
                                             if c["name"] == bus.consumer and "b" in c["flags"]), None))
            direct.client_kill_filter(_id=reading["id"])
            return "Redis unreachable" in caplog.text

        wait_for(kill_its_read)
        bus.publish("fills", {"n": 1})
        wait_for(lambda: seen == [0, 1])


def test_settings_configure_the_bus(redis_url):
    settings = make_settings(redis_url=redis_url, bus_claim_idle_ms=5_000, bus_max_deliveries=2,
                             bus_stream_maxlen=2_000)
    bus = RedisBus.from_settings(settings.bus, "monitors")
    assert (bus.group, bus.claim_idle_ms, bus.max_deliveries, bus.maxlen) == ("monitors", 5_000, 2, 2_000)
    assert bus.stream("fills") == "sizer:fills"
    with pytest.raises(ValueError, match="REDIS_URL"):
        RedisBus.from_settings(make_settings().bus, "monitors")


def test_a_keyed_topic_is_handled_concurrently_but_one_key_at_a_time_in_order(redis_url, prefix, direct):
    """Signals of many symbols at once on 8 threads; each symbol's signals one at a time, in the order published,
    and never more than the pool holds; a failing entry stays pending for its retry like any other."""
    bus = RedisBus(redis_url, "g", prefix=prefix, concurrency=8, **FAST)
    lock, running_keys, seen, prepared = threading.Lock(), {}, [], []
    overlaps, most_at_once, failed = [], [0], set()

    def handle(event):
        with lock:
            if running_keys.get(event["symbol"]):
                overlaps.append(event)
            running_keys[event["symbol"]] = True
            most_at_once[0] = max(most_at_once[0], sum(running_keys.values()))
        time.sleep(0.01)  # long enough for the pool's threads to overlap
        with lock:
            running_keys[event["symbol"]] = False
            if event["n"] == 7 and 7 not in failed:
                failed.add(7)
                raise ValueError("once")
            seen.append(event)

    bus.subscribe("signals", handle, key=lambda e: e["symbol"], prepare=prepared.append)
    events = [{"symbol": f"S{i % 5}", "n": i} for i in range(60)]
    with running(bus):
        for event in events:
            bus.publish("signals", event)
        wait_for(lambda: len(seen) == 60 and pending(direct, bus, "signals") == 0)
    assert not overlaps
    assert 1 < most_at_once[0] <= 5  # several symbols at once, never one symbol twice
    for symbol in {e["symbol"] for e in events}:  # the retried entry comes last in its symbol
        order = [e["n"] for e in seen if e["symbol"] == symbol]
        assert sorted(order) == sorted(e["n"] for e in events if e["symbol"] == symbol)
        assert [n for n in order if n != 7] == sorted(n for n in order if n != 7)
    assert sum(len(batch) for batch in prepared) >= 60 and max(len(batch) for batch in prepared) <= 16
