import threading
from datetime import datetime, timezone

from backend.bus.base import FILLS
from backend.bus.inprocess import InProcessBus
from backend.domain.model import Fill, Side


def test_fill_events_round_trip_through_the_bus_in_order():
    bus, seen = InProcessBus(), []
    bus.subscribe(FILLS, lambda e: seen.append(("first", Fill.from_event(e))))
    bus.subscribe(FILLS, lambda e: seen.append(("second", Fill.from_event(e))))
    fill = Fill("c1", "SP500", Side.SELL, 2.5, 101.25, datetime(2020, 1, 2, tzinfo=timezone.utc), 0.1, "stop")
    bus.publish(FILLS, fill.to_event())
    bus.publish("other", {"ignored": True})
    assert seen == [("first", fill), ("second", fill)]


def test_run_waits_until_stopped():
    stop = threading.Event()
    worker = threading.Thread(target=InProcessBus().run, args=(stop,))
    worker.start()
    worker.join(timeout=0.05)
    assert worker.is_alive()
    stop.set()
    worker.join(timeout=60)  # at once, but a loaded machine may take its time
    assert not worker.is_alive()
