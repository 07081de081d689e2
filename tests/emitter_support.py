"""The emitter tests' harness: virtual time, a recording ReplyStream, a scripted agent."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from channels.emitter import EmitterSettings, ResponseEmitter
from channels.model import Delivered
from channels.ratelimit import TokenBucket

SETTLE_ROUNDS = 20  # loop turns that let woken tasks run to their next sleep before time moves
EPS = 1e-9


class VirtualClock:
    """Virtual monotonic time with an asyncio sleep that waits on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        if delay <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + delay, next(self._order), future))
        await future

    async def run(self) -> None:
        """Advance time whenever everything is asleep; runs until cancelled."""
        while True:
            for _ in range(SETTLE_ROUNDS):
                await asyncio.sleep(0)
            while self._timers and self._timers[0][2].done():
                heapq.heappop(self._timers)  # its sleeper was cancelled
            if not self._timers:
                await asyncio.sleep(0.001)  # idle, or waiting on real time (a real timeout)
                continue
            self.now = max(self.now, self._timers[0][0])
            assert self.now < 10_000, "virtual time ran away: something never ends"
            while self._timers and self._timers[0][0] <= self.now:
                future = heapq.heappop(self._timers)[2]
                if not future.done():
                    future.set_result(None)


@pytest.fixture
async def clock() -> AsyncIterator[VirtualClock]:
    clock = VirtualClock()
    driver = asyncio.create_task(clock.run(), name="virtual-clock")
    yield clock
    driver.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await driver


@dataclass
class Call:
    kind: str  # "update", "finish" or "fail"
    text: str
    started: float
    ended: float | None = None
    reason: str = ""
    error: BaseException | None = None

    @property
    def landed(self) -> bool:
        return self.ended is not None and self.error is None


class RecordingStream:
    """A ReplyStream that records every call, fails on demand and checks one call at a time."""

    def __init__(
        self,
        clock: VirtualClock,
        *,
        latency: float = 0.05,
        update_faults: Iterable[BaseException | None] = (),
        finish_faults: Iterable[BaseException | None] = (),
        finish_always: BaseException | None = None,
        fail_hangs: bool = False,
    ) -> None:
        self.clock = clock
        self.latency = latency
        self.update_faults = list(update_faults)
        self.finish_faults = list(finish_faults)
        self.finish_always = finish_always
        self.fail_hangs = fail_hangs
        self.calls: list[Call] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._delivered = ""

    @property
    def delivered(self) -> Delivered:
        return Delivered(card_id="card-1", text=self._delivered)

    def of(self, kind: str) -> list[Call]:
        return [call for call in self.calls if call.kind == kind]

    async def update(self, text_so_far: str) -> None:
        fault = self.update_faults.pop(0) if self.update_faults else None
        await self._call(Call("update", text_so_far, self.clock()), fault)

    async def finish(self, final_text: str) -> None:
        fault = self.finish_faults.pop(0) if self.finish_faults else self.finish_always
        await self._call(Call("finish", final_text, self.clock()), fault)

    async def fail(self, reason: str, partial_text: str = "") -> None:
        call = Call("fail", partial_text, self.clock(), reason=reason)
        if self.fail_hangs:
            self.calls.append(call)
            await asyncio.Event().wait()
        await self._call(call, None)

    async def _call(self, call: Call, fault: BaseException | None) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        assert self.in_flight == 1, "two platform calls of one reply in flight"
        self.calls.append(call)
        try:
            await self.clock.sleep(self.latency)
            call.ended = self.clock()
            if fault is not None:
                call.error = fault
                raise fault
            self._delivered = call.text
        finally:
            self.in_flight -= 1


class FakeAgent:
    """Yields the given deltas `gap` apart, then raises `error` if given; records its reads."""

    def __init__(
        self,
        clock: VirtualClock,
        deltas: Iterable[str],
        *,
        gap: float = 0.01,
        error: BaseException | None = None,
    ) -> None:
        self.clock = clock
        self.deltas = list(deltas)
        self.gap = gap
        self.error = error
        self.pulled_at: list[float] = []
        self.closed = False

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    async def stream(self) -> AsyncIterator[str]:
        try:
            for delta in self.deltas:
                await self.clock.sleep(self.gap)
                self.pulled_at.append(self.clock())
                yield delta
            if self.error is not None:
                raise self.error
        finally:
            self.closed = True


def words(count: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}{i} " for i in range(count)]


def make_emitter(
    clock: VirtualClock,
    *,
    bucket: TokenBucket | None = None,
    rate: float = 100.0,
    burst: int = 10,
    **settings: Any,  # EmitterSettings fields
) -> ResponseEmitter:
    if bucket is None:
        bucket = TokenBucket(rate, burst, clock=clock, sleep=clock.sleep)
    return ResponseEmitter(bucket, EmitterSettings(**settings), clock=clock, sleep=clock.sleep)


class ProgressLog:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.first = asyncio.Event()

    async def __call__(self, text: str) -> None:
        self.texts.append(text)
        self.first.set()


def assert_paced(calls: list[Call], min_interval: float) -> None:
    starts = [call.started for call in calls]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= min_interval - EPS for gap in gaps), gaps
