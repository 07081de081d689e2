"""TokenBucket: burst, steady rate, fairness, penalties, the floor, pauses and recovery."""

from __future__ import annotations

import asyncio
import itertools
from typing import TypedDict

import pytest

from channels.ratelimit import TokenBucket


class FakeClock:
    """Time that moves only when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += max(delay, 0.0)
        await asyncio.sleep(0)


def make_bucket(
    clock: FakeClock, rate: float = 10.0, burst: int = 3, **kwargs: float
) -> TokenBucket:
    return TokenBucket(rate, burst, clock=clock, sleep=clock.sleep, **kwargs)


async def test_burst_is_free_then_tokens_come_at_the_rate() -> None:
    clock = FakeClock()
    bucket = make_bucket(clock, rate=10, burst=3)
    for _ in range(3):
        await bucket.acquire()
    assert clock.now == 0.0
    for _ in range(10):
        await bucket.acquire()
    assert clock.now == pytest.approx(1.0)


async def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    bucket = make_bucket(clock, rate=10, burst=3)
    for _ in range(3):
        await bucket.acquire()
    clock.now += 60.0  # a long quiet spell must not bank 600 tokens
    for _ in range(3):
        await bucket.acquire()
    assert clock.now == 60.0
    await bucket.acquire()
    assert clock.now == pytest.approx(60.1)


async def test_waiters_are_served_in_turn() -> None:
    clock = FakeClock()
    bucket = make_bucket(clock, rate=10, burst=1)
    order: list[str] = []

    async def reply(name: str) -> None:
        for _ in range(4):
            await bucket.acquire()
            order.append(name)

    async with asyncio.TaskGroup() as group:
        for name in "abc":
            group.create_task(reply(name))
    assert sorted(order) == sorted("abc" * 4)
    # While all three wait, none takes more than one token per turn of the others.
    for name in "abc":
        seen = [i for i, who in enumerate(order) if who == name]
        assert max(b - a for a, b in itertools.pairwise(seen)) <= 3, order
    assert clock.now == pytest.approx(1.1)


async def test_a_cancelled_waiter_does_not_wedge_the_bucket() -> None:
    clock = FakeClock()
    parked = asyncio.Event()
    park = True

    async def sleep(delay: float) -> None:
        if park:  # the first waiter parks until cancelled
            parked.set()
            await asyncio.Event().wait()
        await clock.sleep(delay)

    bucket = TokenBucket(1, 1, clock=clock, sleep=sleep)
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await parked.wait()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    park = False
    await asyncio.wait_for(bucket.acquire(), timeout=1.0)
    assert clock.now == pytest.approx(1.0)


async def test_acquire_waits_without_blocking_the_loop() -> None:
    bucket = TokenBucket(rate=50, burst=1)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        for _ in range(6):
            await bucket.acquire()  # about 0.1 s of real waiting in total
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert ticks >= 5


def test_penalize_halves_down_to_the_floor() -> None:
    clock = FakeClock()
    bucket = make_bucket(clock, rate=8, quiet_period=1.0)
    rates = []
    for _ in range(5):
        bucket.penalize()
        rates.append(bucket.rate)
        clock.now += 1.0  # one halving per quiet period; recovery has not started yet
    assert rates == [4.0, 2.0, 1.0, 1.0, 1.0]
    clock.now += 1000.0  # long quiet: back to the configured rate, never above it
    assert bucket.rate == 8.0


def test_floor_never_exceeds_a_slow_configured_rate() -> None:
    clock = FakeClock()
    bucket = make_bucket(clock, rate=0.5)  # WeCom-like: 30 per minute
    bucket.penalize()
    assert bucket.rate == 0.5


def test_a_burst_of_penalties_halves_once() -> None:
    clock = FakeClock()
    bucket = make_bucket(clock, rate=20, quiet_period=1.0)
    for _ in range(5):  # five replies' calls in flight all answered 429
        bucket.penalize()
        clock.now += 0.01
    assert bucket.rate == 10.0


async def test_penalty_empties_the_bucket_and_slows_the_flow() -> None:
    clock = FakeClock()
    bucket = make_bucket(clock, rate=10, burst=5, quiet_period=100.0)
    bucket.penalize()
    for _ in range(5):
        await bucket.acquire()
    assert clock.now == pytest.approx(1.0)  # five tokens at 5/s, none left from the burst


async def test_retry_after_pauses_every_acquirer() -> None:
    clock = FakeClock()
    bucket = make_bucket(clock, rate=10, burst=3, quiet_period=100.0)
    bucket.penalize(retry_after=2.0)
    assert await bucket.acquire(max_wait=1.9) is False  # nothing before the pause ends
    times = []
    for _ in range(3):
        await bucket.acquire()
        times.append(clock.now)
    # Nothing accrues during the pause: no burst when it ends, one token per interval at 5/s.
    assert times == pytest.approx([2.2, 2.4, 2.6])


async def test_a_bounded_acquire_gives_up_at_once_and_takes_nothing() -> None:
    clock = FakeClock()
    bucket = make_bucket(clock, rate=10, burst=1, quiet_period=100.0)
    bucket.penalize(retry_after=30.0)
    assert await bucket.acquire(max_wait=5.0) is False
    assert clock.now == 0.0  # it did not sleep towards a token it could not get
    assert await bucket.acquire(max_wait=31.0) is True
    assert clock.now == pytest.approx(30.2)
    assert await bucket.acquire(max_wait=0.1) is False  # the next one is 0.2 s away
    assert await bucket.acquire(max_wait=0.25) is True
    assert clock.now == pytest.approx(30.4)


def test_rate_recovers_gradually_after_a_quiet_period() -> None:
    clock = FakeClock()
    bucket = make_bucket(clock, rate=10, quiet_period=1.0, recovery=0.1)
    bucket.penalize()
    samples = {}
    for at in (0.5, 1.0, 2.0, 3.0, 6.0, 20.0):
        clock.now = at
        samples[at] = bucket.rate
    assert samples == pytest.approx({0.5: 5.0, 1.0: 5.0, 2.0: 6.0, 3.0: 7.0, 6.0: 10.0, 20.0: 10.0})


def test_a_penalty_during_recovery_halves_from_where_it_got() -> None:
    clock = FakeClock()
    bucket = make_bucket(clock, rate=10, quiet_period=1.0, recovery=0.1)
    bucket.penalize()
    clock.now = 3.0  # recovered to 7/s
    bucket.penalize()
    assert bucket.rate == pytest.approx(3.5)


class Tuning(TypedDict, total=False):
    """The keyword settings of TokenBucket that test_rejects_nonsense varies."""

    min_rate: float
    recovery: float


@pytest.mark.parametrize(
    ("rate", "burst", "kwargs"),
    [(0, 1, {}), (1, 0, {}), (1, 1, {"min_rate": 0}), (1, 1, {"recovery": 0})],
)
def test_rejects_nonsense(rate: float, burst: int, kwargs: Tuning) -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate, burst, **kwargs)
