"""Suite-wide guards: a blocked event loop fails the test, and nothing leaves loopback."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
# Agents and providers must never reach a real service from a test.
for _var in ("LLM_API_KEY", "LLM_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(_var, None)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "", None})  # noqa: S104
_real_getaddrinfo = socket.getaddrinfo


def _loopback_only_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    """Every name lookup in the suite goes through here: nothing may leave this machine."""
    name = host.decode() if isinstance(host, bytes) else host
    if name not in LOOPBACK_NAMES and not str(name).startswith("127."):
        raise OSError(f"test tried to reach {name!r}: tests must stay on loopback")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_only_getaddrinfo

LOOP_BLOCK_LIMIT = 0.5  # seconds the loop may go without running a callback (CI machines are busy)


class _CollectorClock:
    """Time the interpreter spends in garbage collection (which stops every thread).

    A full collection over the heap of a long test session can take half a second; that is the
    interpreter's pause, not the code under test blocking its loop, so the guard leaves it out.
    """

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []
        self._began = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.monotonic()
        else:
            self.pauses.append((self._began, time.monotonic()))
            del self.pauses[:-100]

    def within(self, start: float, end: float) -> float:
        """Seconds of collection between `start` and `end`."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in list(self.pauses))


_collector = _CollectorClock()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything imported by now lives for the whole session: keep it out of collections."""
    gc.collect()
    gc.freeze()


class LoopBlockGuard:
    """Watches a running loop from a thread; records every stall above the limit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self._loop = loop
        self._limit = limit
        self._last_tick = time.monotonic()
        self._stop = threading.Event()
        self.stalls: list[float] = []
        self._thread = threading.Thread(target=self._watch, name="loop-guard", daemon=True)
        self._handle: asyncio.TimerHandle | None = None

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        self._handle = self._loop.call_later(0.01, self._tick)

    def _watch(self) -> None:
        reported_for = 0.0
        while not self._stop.wait(0.02):
            last = self._last_tick
            now = time.monotonic()
            stalled = now - last - _collector.within(last, now)
            if stalled > self._limit and last != reported_for:
                reported_for = last
                self.stalls.append(stalled)

    def start(self) -> None:
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._handle is not None:
            self._handle.cancel()


@pytest.fixture(autouse=True)
async def loop_block_guard(request: pytest.FixtureRequest) -> AsyncIterator[LoopBlockGuard | None]:
    """Fails any async test during which the event loop stalled for longer than the limit."""
    if not inspect.iscoroutinefunction(request.function):
        yield None  # a plain test has no running loop to watch
        return
    guard = LoopBlockGuard(asyncio.get_running_loop(), LOOP_BLOCK_LIMIT)
    guard.start()
    yield guard
    guard.stop()
    if guard.stalls and not request.node.get_closest_marker("allow_loop_block"):
        pytest.fail(f"event loop blocked for {max(guard.stalls):.3f}s (limit {LOOP_BLOCK_LIMIT}s)")
