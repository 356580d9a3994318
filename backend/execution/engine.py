"""The engine: how the market's clock and the broker's events drive the executor and the position monitor, the
same for `sizer serve`, `sizer worker`, replays, backtests and the tests. The composition root
(`backend.bootstrap`) only builds the parts and hands them to it."""
from __future__ import annotations

import logging

from tenacity import Retrying, retry_if_exception_type, stop_before_delay, wait_exponential

from backend.brokers.base import Broker
from backend.bus.base import FILLS, ORDER_ENDS, SIGNALS, BusUnavailable, EventBus
from backend.domain.model import Fill, OrderEnded, Signal
from backend.execution.executor import Executor
from backend.execution.monitor import PositionMonitor
from backend.risk import RiskManager

log = logging.getLogger(__name__)
PUBLISH_PATIENCE_S = 300.0


class Engine:
    def __init__(self, broker: Broker, bus: EventBus, executor: Executor, monitor: PositionMonitor,
                 risk: RiskManager) -> None:
        self.broker, self.bus, self.executor, self.monitor, self.risk = broker, bus, executor, monitor, risk

    def step(self) -> list[Fill]:
        """One step of the clock: a bar of simulated time (a real broker's clock moves by itself: a poll). Fills
        go out on the bus, then open trades are marked and closed where due, and the protections see the
        account. Raises EndOfData after the simulator's last bar."""
        fills = self.broker.advance()
        for fill in fills:
            self.bus.publish(FILLS, fill.to_event())
        self.monitor.on_bar()
        self.executor.evaluate_protections()
        return fills

    def listen(self, *, fills: bool, signals: bool) -> None:
        """Subscribe to the bus: `fills`: the broker's fills and ended orders go to the monitor; `signals` (a
        worker): queued signals go to the executor, those of different symbols at once."""
        if fills:
            self.bus.subscribe(FILLS, self.on_fill)
            self.bus.subscribe(ORDER_ENDS, lambda event: self.monitor.on_order_ended(OrderEnded.from_event(event)))
        if signals:
            self.bus.subscribe(SIGNALS, lambda event: self.executor.handle_queued(Signal.from_event(event)),
                               key=lambda event: event.get("symbol"),
                               prepare=lambda events: self.risk.prefetch(
                                   [e["symbol"] for e in events if isinstance(e.get("symbol"), str)]))

    def on_fill(self, event: dict) -> None:
        self.broker.account_changed()  # the next decision reads the account again
        self.monitor.on_fill(Fill.from_event(event))

    def on_trade_update(self, update: Fill | OrderEnded) -> None:
        """A real broker's trade update, published on the bus for whichever process handles fills. Waits out a bus
        outage (backoff from 0.25 s to 5 s, up to PUBLISH_PATIENCE_S): the broker sends it once, so it must not be
        dropped; the trade-update stream waits meanwhile."""
        if isinstance(update, Fill):
            self.broker.account_changed()
        topic, event = (FILLS if isinstance(update, Fill) else ORDER_ENDS), update.to_event()
        Retrying(retry=retry_if_exception_type(BusUnavailable), wait=wait_exponential(0.25, max=5.0),
                 stop=stop_before_delay(PUBLISH_PATIENCE_S), reraise=True,
                 before_sleep=lambda state: log.warning("%s; %s event of %s waits %.2f s", state.outcome.exception(),
                                                        topic, event.get("client_order_id"), state.next_action.sleep)
                 )(self.bus.publish, topic, event)
