"""Group commit: callers that arrive while a batch is being committed wait, and the next batch takes them all."""
from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Calls `commit` with batches of the items given to it from many threads. An item that arrives while a
    batch is in `commit` waits; when that batch ends, the first waiting thread commits every item waiting by
    then, and the others return when it has. A lock and a commit are thus paid once per batch, however many
    threads queue behind them. `commit` reports each item's result on the item; its exception is raised in the
    thread of every item of the batch."""

    def __init__(self, commit: Callable[[list[T]], None]) -> None:
        self._commit = commit
        self._changed = threading.Condition()
        self._waiting: list[T] = []
        self._committing = False
        self._done: dict[int, BaseException | None] = {}  # id(item) -> its batch's exception, until it returns

    def __call__(self, item: T) -> None:
        batch = None
        with self._changed:
            self._waiting.append(item)
            self._changed.wait_for(lambda: id(item) in self._done or not self._committing)
            if id(item) not in self._done:  # no batch in progress: this thread commits all that wait
                self._committing = True
                batch, self._waiting = self._waiting, []
        if batch is not None:
            error = None
            try:
                self._commit(batch)
            except BaseException as exc:
                error = exc
            with self._changed:
                self._done.update((id(other), error) for other in batch)
                self._committing = False
                self._changed.notify_all()
        with self._changed:
            error = self._done.pop(id(item))
        if error is not None:
            raise error
