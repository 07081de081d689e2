"""One backoff for every retry: exponential, capped, with a random share drawn from a given rng."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


class Rng(Protocol):
    """Where jitter comes from: a `random.Random`, seeded in tests."""

    def random(self) -> float:
        """A number in [0, 1)."""
        ...


_RNG = random.Random()  # noqa: S311 - jitter, not cryptography


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff, capped: retry n waits between (1 - jitter) and 1 times its ceiling."""

    initial: float = 1.0  # the ceiling of the first retry's wait, in seconds
    maximum: float = 60.0
    factor: float = 2.0
    # The random share of each wait. 0.5 ("equal jitter") never waits less than half the ceiling,
    # so a storm of failures spreads out without instant retries; 0 makes every wait exact.
    jitter: float = 0.5
    healthy_after: float = 60.0  # a session that lived this long resets its attempt count

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"backoff: need 0 < initial <= maximum, got {self}")
        if self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff: need factor >= 1 and 0 <= jitter <= 1, got {self}")

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry `attempt` (1 for the first; below 1 counts as 1)."""
        steps = max(0, attempt - 1)
        # Compared as logarithms: a channel down for a day counts thousands of attempts, and
        # factor ** attempt would overflow a float long before that.
        if self.factor == 1 or steps < math.log(self.maximum / self.initial, self.factor):
            return min(self.maximum, self.initial * self.factor**steps)
        return self.maximum

    def delay(self, attempt: int, rng: Rng = _RNG) -> float:
        """The wait before retry `attempt` (1 for the first)."""
        ceiling = self.ceiling(attempt)
        return ceiling * (1 - self.jitter) + ceiling * self.jitter * rng.random()

    def delays(self, count: int | None = None, *, rng: Rng = _RNG) -> Iterator[float]:
        """The waits before retries 1, 2, 3...: `count` of them, or without end."""
        attempts = itertools.count(1) if count is None else range(1, count + 1)
        return (self.delay(attempt, rng) for attempt in attempts)
