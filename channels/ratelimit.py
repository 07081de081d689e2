"""Per-channel call budget: an async token bucket that slows down when the platform pushes back.

Adaptive policy: `penalize()` (a 403/429 came back) halves the effective rate, never below
`min_rate` (1/s by default, or the configured rate when that is lower), empties the bucket so the
burst does not hit the platform again, and pauses every acquirer for the platform's `retry_after`.
Once `quiet_period` seconds pass without another penalty, the rate climbs back linearly by
`recovery` x the configured rate per second (10 %/s by default) until it is whole again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Float refills land a hair short of a whole token; without this slack a fake clock that advances
# by exactly the computed wait could spin on ever smaller sleeps.
_EPSILON = 1e-9


class TokenBucket:
    """Tokens for one channel's platform calls, shared by all its replies; FIFO and adaptive."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        min_rate: float = 1.0,
        quiet_period: float = 1.0,
        recovery: float = 0.1,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1 or min_rate <= 0 or quiet_period < 0 or recovery <= 0:
            raise ValueError("need rate, min_rate, recovery > 0, burst >= 1, quiet_period >= 0")
        self._rate = rate
        self._burst = float(burst)
        self._min_rate = min(min_rate, rate)
        self._quiet_period = quiet_period
        self._recovery = recovery
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._tokens = float(burst)
        self._updated = now
        self._paused_until = now
        self._base_rate = rate  # the effective rate right after the last penalty
        self._penalized_at: float | None = None
        self._halved_at: float | None = None
        # The lock makes waiters queue in arrival order, so one busy reply cannot starve the rest.
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        """Effective tokens per second right now."""
        return self._rate_at(self._clock())

    async def acquire(self, max_wait: float | None = None) -> bool:
        """Wait for a token and take it; False, taking none, if it cannot come within max_wait."""
        deadline = None if max_wait is None else self._clock() + max_wait
        async with self._lock:
            while True:
                now = self._clock()
                self._refill(now)
                if self._tokens >= 1 - _EPSILON:
                    self._tokens -= 1
                    return True
                # Recomputed after every sleep: a penalty may have arrived in the meantime.
                start = max(now, self._paused_until)
                ready = start + (1 - self._tokens) / self._rate_at(start)
                if deadline is not None and ready > deadline + _EPSILON:
                    return False
                await self._sleep(ready - now)

    def penalize(self, retry_after: float | None = None) -> None:
        """Slow down after a 403/429 from the platform; pause for `retry_after` seconds if given."""
        now = self._clock()
        self._refill(now)
        rate = self._rate_at(now)
        # Calls already in flight when the first 429 came back were sent at the old rate; their
        # 429s must not halve again, or one burst would collapse the rate to the floor.
        if self._halved_at is None or now - self._halved_at >= self._quiet_period:
            rate = max(self._min_rate, rate / 2)
            self._halved_at = now
        self._base_rate = rate
        self._penalized_at = now
        self._tokens = min(self._tokens, 0.0)
        if retry_after is not None and retry_after > 0:
            self._paused_until = max(self._paused_until, now + retry_after)

    def _rate_at(self, now: float) -> float:
        if self._penalized_at is None:
            return self._rate
        quiet = now - self._penalized_at - self._quiet_period
        if quiet <= 0:
            return self._base_rate
        return min(self._rate, self._base_rate + quiet * self._recovery * self._rate)

    def _refill(self, now: float) -> None:
        # Nothing accrues while paused, so the end of a pause is not followed by a full burst.
        start = max(self._updated, self._paused_until)
        if now > start:
            # The rate at the start of the interval: conservative while the rate is recovering.
            self._tokens = min(self._burst, self._tokens + (now - start) * self._rate_at(start))
        self._updated = max(self._updated, now)
