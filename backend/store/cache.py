"""The read cache of the decision path's database reads."""
from __future__ import annotations

import time
from typing import Any, Callable

MAX_AGE_S = 1.0


class ReadCache:
    """Reads on every decision's path change only when an outcome, an opening or an import is written. They are
    cached: dropped at once when this process writes, at most MAX_AGE_S old when another process does (several
    workers). Shared by the repositories, so that a write to one drops what another derived from it."""

    def __init__(self) -> None:
        self._values: dict[tuple, tuple[float, Any, Any]] = {}

    def get(self, key: tuple, load: Callable[[], Any], version: Any = None) -> Any:
        """The value under `key`, loaded again when older than MAX_AGE_S or read for another `version`."""
        now = time.monotonic()
        hit = self._values.get(key)
        if hit is not None and now - hit[0] < MAX_AGE_S and hit[2] == version:
            return hit[1]
        value = load()
        self._values[key] = (now, value, version)
        return value

    def drop(self, key: tuple) -> None:
        self._values.pop(key, None)

    def clear(self) -> None:
        self._values.clear()
