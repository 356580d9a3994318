"""The EventBus over Redis Streams, for several processes: one stream per topic, one consumer group per kind of
worker, so each event is handled by one consumer of the group (at least once; handlers must be idempotent).

* publish: XADD of the JSON event, the stream trimmed to about `maxlen` entries; BusUnavailable if Redis is down.
* run: XREADGROUP (blocking `block_ms`); a handler's success ACKs the entry. A handler's exception leaves it
  pending; XAUTOCLAIM hands entries idle over `claim_idle_ms` (a failure, or a consumer that died) to a live
  consumer, which retries them. An entry delivered `max_deliveries` times without success goes to the topic's
  dead-letter stream (`<stream>:dead`) with the error, so a poison event cannot loop forever.
* A handler failing on a `transient` exception (a dependency down: the database, the broker) is retried in
  place with backoff, without spending a delivery: every event would fail the same way until it is back.
* Losing Redis does not end `run`: it logs, waits with exponential backoff and resumes where the group was.
* A topic subscribed with a `key` is handled on `concurrency` threads: entries with the same key (a signal's
  symbol) one at a time, in stream order. Back-pressure: new entries are read only while at most `concurrency`
  are in hand, up to twice that. `prepare` sees each batch read before it is handled (to load what it needs
  in a few requests). Entries are acknowledged as their handlers succeed, in one XACK per read.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Hashable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from tenacity import Retrying, retry_if_exception_type, wait_exponential

from backend.bus.base import BusUnavailable, Event, Handler

if TYPE_CHECKING:
    from backend.config import BusSettings

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
BUSY_BLOCK_MS = 50  # while entries are in hand, reads wait this long at most, so finished ones are acked soon


class KeyedPool:
    """Runs tasks on `size` threads; tasks with the same key run one at a time, in the order submitted."""

    def __init__(self, size: int) -> None:
        self._threads = ThreadPoolExecutor(size, thread_name_prefix="bus")
        self._queues: dict[Hashable, deque[Callable[[], None]]] = {}
        self._changed = threading.Condition()
        self.in_hand = 0

    def submit(self, key: Hashable, task: Callable[[], None]) -> None:
        with self._changed:
            self.in_hand += 1
            queue = self._queues.get(key)
            if queue is not None:  # the key's thread runs it after those before it
                queue.append(task)
                return
            self._queues[key] = deque([task])
        self._threads.submit(self._drain, key)

    def _drain(self, key: Hashable) -> None:
        while True:
            with self._changed:
                task = self._queues[key][0]
            try:
                task()
            finally:
                with self._changed:
                    queue = self._queues[key]
                    queue.popleft()
                    self.in_hand -= 1
                    self._changed.notify_all()
                    if not queue:
                        del self._queues[key]
                        return

    def wait_for_room(self, most: int, timeout: float) -> bool:
        """Until at most `most` tasks are in hand (True), or `timeout` seconds passed (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.in_hand <= most, timeout)

    def shutdown(self) -> None:
        self._threads.shutdown(wait=True)


class RedisBus:
    def __init__(
        self,
        url: str,
        group: str,
        *,
        prefix: str = "sizer:",
        claim_idle_ms: int = 60_000,
        max_deliveries: int = 5,
        maxlen: int = 100_000,
        block_ms: int = 1_000,
        batch: int = 10,
        consumer: str | None = None,
        transient: tuple[type[Exception], ...] = (),
        concurrency: int = 1,
    ) -> None:
        self.group, self.prefix, self.transient = group, prefix, transient
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        # No silent retries inside redis-py: `run` owns reconnection, so an outage is logged and backed off.
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=2,
                                           socket_timeout=block_ms / 1000 + 5, retry=Retry(NoBackoff(), 0),
                                           client_name=self.consumer)
        self.claim_idle_ms, self.max_deliveries, self.maxlen = claim_idle_ms, max_deliveries, maxlen
        self.block_ms, self.batch = block_ms, batch
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._keys: dict[str, Callable[[Event], Hashable]] = {}
        self._prepare: dict[str, Callable[[list[Event]], None]] = {}
        self.concurrency = concurrency
        self._pool: KeyedPool | None = None  # made by `run`, for the keyed topics
        self._in_hand: set[tuple[str, str]] = set()  # (stream, entry id) given to the pool, not finished
        self._done: list[tuple[str, str]] = []  # handled by the pool, to acknowledge
        self._done_lock = threading.Lock()
        self._next_claim = 0.0  # reclaiming runs every claim_idle_ms / 2
        self._stop = threading.Event()

    @classmethod
    def from_settings(cls, settings: BusSettings, group: str,
                      transient: tuple[type[Exception], ...] = ()) -> RedisBus:
        if not settings.redis_url:
            raise ValueError("REDIS_URL is not set")
        return cls(settings.redis_url, group, prefix=settings.redis_prefix, claim_idle_ms=settings.claim_idle_ms,
                   max_deliveries=settings.max_deliveries, maxlen=settings.stream_maxlen,
                   transient=transient, concurrency=settings.worker_concurrency)

    def stream(self, topic: str) -> str:
        return f"{self.prefix}{topic}"

    def dead_letters(self, topics: tuple[str, ...]) -> dict[str, int]:
        """How many entries each topic's dead-letter stream holds."""
        with self.client.pipeline(transaction=False) as pipe:
            for topic in topics:
                pipe.xlen(f"{self.stream(topic)}:dead")
            return dict(zip(topics, pipe.execute()))

    def publish(self, topic: str, event: Event) -> None:
        try:
            self.client.xadd(self.stream(topic), {"event": json.dumps(event)}, maxlen=self.maxlen, approximate=True)
        except redis.RedisError as exc:
            raise BusUnavailable(f"Redis did not take the {topic} event: {exc}") from exc

    def subscribe(self, topic: str, handler: Handler, *, key: Callable[[Event], Hashable] | None = None,
                  prepare: Callable[[list[Event]], None] | None = None) -> None:
        stream = self.stream(topic)
        self._handlers[stream].append(handler)
        if key is not None:
            self._keys[stream] = key
        if prepare is not None:
            self._prepare[stream] = prepare

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        self._pool = KeyedPool(self.concurrency) if self._keys else None
        while not stop.is_set():
            try:
                self._ensure_groups()
                while not stop.is_set():
                    if time.monotonic() >= self._next_claim:
                        self._reclaim()
                        self._next_claim = time.monotonic() + self.claim_idle_ms / 2000
                    self._read_new()
                    self._ack_done()
            except REDIS_DOWN as exc:
                log.warning("Redis unreachable (%s); consumer %s reconnects", exc, self.consumer)
                self._wait_for_redis(stop)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):  # a Redis restarted without its data: groups are made again
                    raise
                log.warning("consumer group %s is gone (%s); creating it again", self.group, exc)
        if self._pool is not None:
            self._pool.shutdown()  # handlers in progress see `stop` and leave their entries pending
            try:
                self._ack_done()
            except redis.RedisError as exc:  # they stay pending: handled again after claim_idle_ms, harmlessly
                log.warning("could not acknowledge the last handled entries: %s", exc)
        self.client.close()

    def _wait_for_redis(self, stop: threading.Event) -> None:
        """Until Redis answers a PING, with backoff from 0.5 s to MAX_BACKOFF_S (afresh for each outage), or `stop`."""
        Retrying(retry=retry_if_exception_type(REDIS_DOWN), wait=wait_exponential(0.5, max=MAX_BACKOFF_S),
                 stop=lambda _: stop.is_set(), sleep=stop.wait, retry_error_callback=lambda _: None,
                 before_sleep=lambda state: log.warning(
                     "Redis unreachable (%s); consumer %s retries in %.1f s", state.outcome.exception(), self.consumer,
                     state.next_action.sleep))(self.client.ping)

    def _ensure_groups(self) -> None:
        for stream in self._handlers:
            try:
                self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _read_new(self) -> None:
        if not self._handlers:
            return
        count, block = self.batch, self.block_ms
        if self._pool is not None:  # back-pressure: read only while the pool has room
            if not self._pool.wait_for_room(self.concurrency, self.block_ms / 1000):
                return
            count = max(count, 2 * self.concurrency - self._pool.in_hand)
            block = min(block, BUSY_BLOCK_MS) if self._pool.in_hand else block
        replies = self.client.xreadgroup(self.group, self.consumer, {s: ">" for s in self._handlers},
                                         count=count, block=block)
        for stream, entries in replies or []:
            self._take(stream, entries)

    def _take(self, stream: str, entries: list[tuple[str, dict]]) -> None:
        """Handle entries read: on the pool for a keyed stream (acknowledged as they finish), else here."""
        key = self._keys.get(stream)
        if key is None or self._pool is None:
            self._ack(stream, [entry_id for entry_id, fields in entries if self._deliver(stream, entry_id, fields)])
            return
        events = {}
        for entry_id, fields in entries:
            try:
                event = json.loads(fields["event"])
            except (KeyError, ValueError):
                event = None  # _deliver dead-letters it
            events[entry_id] = event if isinstance(event, dict) else None
        if stream in self._prepare:
            try:
                self._prepare[stream]([e for e in events.values() if e is not None])
            except Exception:  # only a head start: each handler reads what it still lacks itself
                log.exception("preparing %d entries of %s failed", len(entries), stream)
        for entry_id, fields in entries:
            event = events[entry_id]
            self._in_hand.add((stream, entry_id))
            self._pool.submit((stream, key(event) if event is not None else entry_id),
                              functools.partial(self._run_one, stream, entry_id, fields))

    def _run_one(self, stream: str, entry_id: str, fields: dict) -> None:
        try:
            if not self._stop.is_set() and self._deliver(stream, entry_id, fields):
                with self._done_lock:
                    self._done.append((stream, entry_id))
        finally:
            self._in_hand.discard((stream, entry_id))

    def _ack_done(self) -> None:
        with self._done_lock:
            done, self._done = self._done, []
        by_stream: dict[str, list[str]] = defaultdict(list)
        for stream, entry_id in done:
            by_stream[stream].append(entry_id)
        try:
            for stream, ids in by_stream.items():
                self._ack(stream, ids)
        except redis.RedisError:
            with self._done_lock:  # acknowledged after the reconnection
                self._done = done + self._done
            raise

    def _reclaim(self) -> None:
        """Take over entries idle too long. XAUTOCLAIM answers [cursor, entries] (Redis 6.2) or [cursor, entries,
        deleted ids] (Redis 7); claiming counts as a delivery."""
        for stream in self._handlers:
            cursor = "0-0"
            while True:
                reply = self.client.xautoclaim(stream, self.group, self.consumer, self.claim_idle_ms,
                                               start_id=cursor, count=self.batch)
                # entries this consumer still has in hand are its own, not a dead consumer's: leave them be
                cursor, entries = reply[0], [(i, f) for i, f in reply[1]
                                             if f is not None and (stream, i) not in self._in_hand]
                retry = []
                for entry_id, fields in entries:
                    if self._deliveries(stream, entry_id) > self.max_deliveries:
                        self._dead_letter(stream, entry_id, fields, "its consumers died or stalled handling it")
                    else:
                        retry.append((entry_id, fields))
                self._take(stream, retry)
                if cursor == "0-0":
                    break

    def _deliver(self, stream: str, entry_id: str, fields: dict) -> bool:
        """Hand the entry to the stream's handlers; True when it was handled and is to be acknowledged (with
        the rest of its batch, in one XACK: a consumer dying before it makes the batch handled again)."""
        try:
            event = json.loads(fields["event"])
        except (KeyError, ValueError) as exc:  # no retry can fix it
            self._dead_letter(stream, entry_id, fields, f"undecodable entry: {exc!r}")
            return False
        try:
            return self._handle(stream, entry_id, event)
        except Exception as exc:  # the entry stays pending: retried after claim_idle_ms, or dead-lettered
            deliveries = self._deliveries(stream, entry_id)
            if deliveries >= self.max_deliveries:
                self._dead_letter(stream, entry_id, fields, f"{exc.__class__.__name__}: {exc}")
            else:
                log.exception("handling %s %s failed (delivery %d of %d); it will be retried",
                              stream, entry_id, deliveries, self.max_deliveries)
            return False

    def _ack(self, stream: str, entry_ids: list[str]) -> None:
        if entry_ids:
            self.client.xack(stream, self.group, *entry_ids)

    def _handle(self, stream: str, entry_id: str, event: Event) -> bool:
        """Every handler of the stream; a transient failure is retried here, with backoff from 0.1 s to
        MAX_BACKOFF_S, until it passes (True) or `run` is stopped (False: the entry stays pending, for this or
        another consumer to take up)."""
        def handle() -> bool:
            for handler in self._handlers[stream]:
                handler(event)
            return True

        return Retrying(retry=retry_if_exception_type(self.transient), wait=wait_exponential(0.1, max=MAX_BACKOFF_S),
                        stop=lambda _: self._stop.is_set(), sleep=self._stop.wait,
                        retry_error_callback=lambda _: False,
                        before_sleep=lambda state: log.warning(
                            "handling %s %s waits for a dependency (%r); retry in %.1f s", stream, entry_id,
                            state.outcome.exception(), state.next_action.sleep))(handle)

    def _deliveries(self, stream: str, entry_id: str) -> int:
        pending = self.client.xpending_range(stream, self.group, min=entry_id, max=entry_id, count=1)
        return pending[0]["times_delivered"] if pending else 0

    def _dead_letter(self, stream: str, entry_id: str, fields: dict, error: str) -> None:
        """Move the entry to `<stream>:dead` with the error and acknowledge it, in one transaction."""
        log.error("%s %s goes to the dead-letter stream %s:dead: %s", stream, entry_id, stream, error)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(f"{stream}:dead", {**fields, "id": entry_id, "group": self.group, "error": error},
                      maxlen=self.maxlen, approximate=True)
            pipe.xack(stream, self.group, entry_id)
            pipe.execute()
