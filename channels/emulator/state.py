"""What every emulator's state shares: a change feed to wait on, and injected faults."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class ConsumableFault(Protocol):
    """A fault answering matching calls until its uses run out (None: for ever)."""

    hits: int
    remaining: int | None

    def matches(self, method: str, path: str) -> bool: ...


F = TypeVar("F", bound=ConsumableFault)


class EmulatorStateBase(Generic[F]):
    """A version bumped on every change, waiters woken by it, and the fault list."""

    def __init__(self) -> None:
        self.faults: list[F] = []
        self.version = 0
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """Bump the version and wake everyone waiting for a change."""
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self, at_most: float) -> None:
        """Returns after the next change or after `at_most` seconds, whichever comes first."""
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), at_most)
        except TimeoutError:
            return

    def take_fault(self, method: str, path: str) -> F | None:
        """The first matching fault, consuming one of its uses."""
        for fault in self.faults:
            if fault.matches(method, path):
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                return fault
        return None


async def wait_until(
    check: Callable[[], T],
    wait_changed: Callable[[float], Awaitable[None]],
    timeout: float,  # noqa: ASYNC109 - a deadline for a condition, not for one await
) -> T:
    """`check()`'s first truthy value, re-checked on every change (and every 50 ms, for
    conditions that depend on the clock); TimeoutError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if value:
            return value
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"emulator condition not met within {timeout}s")
        await wait_changed(min(remaining, 0.05))
