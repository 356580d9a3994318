"""The EventBus port: how broker events reach the position monitor (and, with several workers, signals
reach executors). Events are plain JSON-able dicts so every transport can carry them."""
from __future__ import annotations

from typing import Any, Callable, Protocol

Event = dict[str, Any]
Handler = Callable[[Event], None]

FILLS = "fills"


class EventBus(Protocol):
    def publish(self, topic: str, event: Event) -> None: ...

    def subscribe(self, topic: str, handler: Handler) -> None: ...
