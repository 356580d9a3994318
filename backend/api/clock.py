"""The market clock while serving: the simulated broker's bars, which can be paused, stepped and sped up, or the
poll of a real broker's open trades. Every tick samples the account, for the equity history."""
from __future__ import annotations

import asyncio
import logging
from collections import deque

from starlette.concurrency import run_in_threadpool

from backend.bootstrap import Service
from backend.brokers.base import EndOfData, SimulatedClock

log = logging.getLogger(__name__)

HISTORY = 2000  # equity samples kept in memory: the last ones since the service started


class BrokerClock(Exception):
    """A real broker's market runs on its own: it cannot be paused, stepped or sped up."""


class MarketClock:
    def __init__(self, service: Service, *, paused: bool) -> None:
        self.service = service
        self.paused = paused
        self.speed = 1.0
        self.history: deque[dict] = deque(maxlen=HISTORY)
        self._ticking = asyncio.Lock()  # the loop's tick and a step never interleave
        self._changed = asyncio.Event()  # pause, resume or a new speed: the wait for the next tick starts again

    @property
    def bar_seconds(self) -> float:
        """Wall-clock seconds between two ticks now."""
        return self.service.clock_seconds / self.speed

    def state(self) -> dict:
        broker = self.service.broker
        sim = broker if isinstance(broker, SimulatedClock) else None
        return {
            "source": "simulator" if sim else "broker",
            "broker": broker.name,
            "now": broker.now(),
            "paused": self.paused,
            "speed": self.speed,
            "bar_seconds": self.bar_seconds,
            "bars_left": sim.bars_left if sim else None,
            "ends_at": sim.ends_at if sim else None,
        }

    def _drivable(self) -> None:
        if not isinstance(self.service.broker, SimulatedClock):
            raise BrokerClock(f"the clock is the {self.service.broker.name} broker's: it cannot be paused, stepped or "
                              "sped up")

    def control(self, *, paused: bool | None = None, speed: float | None = None) -> None:
        self._drivable()
        self.paused = self.paused if paused is None else paused
        self.speed = self.speed if speed is None else speed
        self._changed.set()

    async def step(self, bars: int) -> None:
        """Show the next `bars` bars now, whether the clock is paused or not; EndOfData (nothing stepped) when the
        data have fewer left."""
        self._drivable()
        broker = self.service.broker
        if bars > broker.bars_left:
            raise EndOfData(f"{bars} bars asked for, {broker.bars_left} left: the data end at "
                            f"{broker.ends_at:%Y-%m-%d}")
        for _ in range(bars):
            await self.tick()

    async def tick(self) -> None:
        async with self._ticking:
            await run_in_threadpool(self._advance_and_sample)

    def _advance_and_sample(self) -> None:
        self.service.engine.step()
        self.sample()

    def sample(self) -> None:
        """The account's equity, cash and gross exposure at the market's time."""
        account = self.service.broker.account()
        self.history.append({
            "at": self.service.broker.now(), "equity": account.equity, "cash": account.cash,
            "gross_position_value": account.gross_position_value,
            "exposure": account.exposure if account.equity > 0 else None,
        })

    async def run(self) -> None:
        """One tick every `bar_seconds` while not paused, until the simulated data end."""
        while True:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), None if self.paused else self.bar_seconds)
                continue
            except asyncio.TimeoutError:
                pass
            try:
                await self.tick()
            except EndOfData:
                log.warning("the bundled data has no more bars: the simulated clock stops")
                return
            except Exception:
                log.exception("marking open trades failed; trying again at the next tick")
