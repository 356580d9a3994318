"""The token bucket on a virtual clock: requests spaced to the rate after a burst, a 429's pause for all."""
from __future__ import annotations

import pytest

from backend.brokers.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_burst_goes_out_at_once_then_requests_are_spaced_to_the_rate():
    clock = Clock()
    bucket = TokenBucket(120, burst=3, clock=clock, sleep=clock.sleep)  # one per 0.5 s
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.5, 1.0, 1.5])  # slots reserved in turn
    clock.now += 10  # idle: the burst refills, no more
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 0.5])


def test_requests_per_minute_never_exceed_the_rate_plus_the_burst():
    clock = Clock()
    bucket = TokenBucket(200, burst=10, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(1000):
        bucket.acquire()
        sent.append(clock.now)
    for i, t in enumerate(sent):
        in_a_minute = sum(1 for u in sent[i:] if u < t + 60)
        assert in_a_minute <= 200 + 10


def test_a_pause_holds_every_request_then_the_rate_resumes():
    clock = Clock()
    bucket = TokenBucket(60, burst=5, clock=clock, sleep=clock.sleep)
    bucket.pause(2.0)
    assert bucket.reserve() == pytest.approx(2.0)
    assert bucket.reserve() == pytest.approx(3.0)


@pytest.mark.parametrize("rate, burst", [(0, 1), (-5, 2), (100, 0)])
def test_a_bucket_without_rate_or_burst_is_refused(rate, burst):
    with pytest.raises(ValueError, match="positive rate and burst"):
        TokenBucket(rate, burst)
