"""The EventBus port: how broker events reach the position monitor (and, with several workers, signals
reach executors). Events are plain JSON-able dicts so every transport can carry them."""
from __future__ import annotations

import threading
from typing import Any, Callable, Hashable, Protocol

Event = dict[str, Any]
Handler = Callable[[Event], None]

FILLS = "fills"
ORDER_ENDS = "order_ends"  # orders canceled, rejected or expired before filling completely
SIGNALS = "signals"  # signals the API accepted, for the workers' executors (only with REDIS_URL)


class BusUnavailable(Exception):
    """The bus could not take the event (its server is unreachable); nothing was published."""


class EventBus(Protocol):
    def publish(self, topic: str, event: Event) -> None: ...

    def subscribe(self, topic: str, handler: Handler, *, key: Callable[[Event], Hashable] | None = None,
                  prepare: Callable[[list[Event]], None] | None = None) -> None:
        """`key`: events with different keys may be handled at the same time, those with one key in order;
        `prepare` may be shown a batch of events before they are handled. A transport that handles one event
        at a time, as it is published, ignores both."""

    def run(self, stop: threading.Event) -> None:
        """Deliver events to the subscribed handlers until `stop` is set (a worker's main loop)."""
