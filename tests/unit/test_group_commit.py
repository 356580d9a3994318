"""GroupCommit: items that wait while a batch commits go together in the next batch; errors reach every caller."""
from __future__ import annotations

import threading

from backend.execution.group_commit import GroupCommit


def test_items_arriving_during_a_commit_go_together_in_the_next_batch():
    batches, first_in, release = [], threading.Event(), threading.Event()

    def commit(batch: list[dict]) -> None:
        batches.append([item["name"] for item in batch])
        for item in batch:
            item["result"] = item["name"].upper()
        if len(batches) == 1:
            first_in.set()
            release.wait(10)

    group = GroupCommit(commit)
    items = [{"name": name} for name in "abcd"]
    threads = [threading.Thread(target=group, args=(items[0],))]
    threads[0].start()
    assert first_in.wait(10)
    threads += [threading.Thread(target=group, args=(item,)) for item in items[1:]]
    for t in threads[1:]:
        t.start()
    while sum(1 for t in threads[1:] if t.is_alive()) < 3 or len(group._waiting) < 3:  # all three queued
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join(10)
    assert batches == [["a"], ["b", "c", "d"]]
    assert [item["result"] for item in items] == ["A", "B", "C", "D"]


def test_a_failed_commit_raises_in_every_thread_of_its_batch_and_the_next_batch_runs():
    entered, release, fail = threading.Event(), threading.Event(), [True]

    def commit(batch: list[int]) -> None:
        if not entered.is_set():
            entered.set()
            release.wait(10)
            return
        if fail[0]:
            fail[0] = False
            raise ConnectionError("database down")

    group = GroupCommit(commit)
    errors: dict[int, BaseException | None] = {}

    def call(item: int) -> None:
        try:
            group(item)
            errors[item] = None
        except ConnectionError as exc:
            errors[item] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert entered.wait(10)
    waiting = [threading.Thread(target=call, args=(i,)) for i in (1, 2)]
    for t in waiting:
        t.start()
    while len(group._waiting) < 2:
        threading.Event().wait(0.01)
    release.set()
    for t in [first, *waiting]:
        t.join(10)
    assert errors[0] is None
    assert isinstance(errors[1], ConnectionError) and errors[1] is errors[2]
    call(3)  # the group is usable after a failure
    assert errors[3] is None
