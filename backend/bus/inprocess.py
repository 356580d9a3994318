"""The embedded default: handlers run in the publisher's thread, in subscription order."""
from __future__ import annotations

import threading
from collections import defaultdict
from typing import Callable, Hashable

from backend.bus.base import Event, Handler


class InProcessBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    def publish(self, topic: str, event: Event) -> None:
        for handler in self._handlers[topic]:
            handler(event)

    def subscribe(self, topic: str, handler: Handler, *, key: Callable[[Event], Hashable] | None = None,
                  prepare: Callable[[list[Event]], None] | None = None) -> None:
        """`key` and `prepare` change nothing here: each event is handled as it is published."""
        self._handlers[topic].append(handler)

    def run(self, stop: threading.Event) -> None:
        """Handlers already ran at publish: there is nothing to consume."""
        stop.wait()
