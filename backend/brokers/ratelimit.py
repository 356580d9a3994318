"""A token bucket for the broker's rate limit, shared by every thread of the process.

Each request reserves the next free slot (the generic cell rate algorithm): requests are spaced
60 / per_minute seconds apart on average, with at most `burst` of them at once. A 429 from the broker stops
every caller until the time it names: the process slows down instead of failing its requests.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class TokenBucket:
    def __init__(self, per_minute: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs a positive rate and burst, not {per_minute}/min, burst {burst}")
        self.interval = 60.0 / per_minute
        self._tolerance = (burst - 1) * self.interval  # how far ahead of its spacing a request may go
        self._next = 0.0  # when the next request would be on time (the theoretical arrival time)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; returns how long the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            start = max(self._next, now)
            self._next = start + self.interval
            return max(0.0, start - self._tolerance - now)

    def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """The broker answered 429: no request goes out for `seconds`, and the burst starts empty after it."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds + self._tolerance)
