"""Runs a platform emulator on its own event loop in a background thread.

SDKs under test make blocking calls from inside their coroutines (dingtalk-stream's and
lark-oapi's `requests.post`); an emulator served by the same loop would never answer them. A
thread also keeps the emulator off the loop a test measures. Every query method of an emulator
returns a snapshot, so results handed back across threads do not change under the caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar, overload

T = TypeVar("T")


class Emulator(Protocol):
    """What a platform emulator offers so a thread can run it."""

    @property
    def url(self) -> str:
        """The base URL, once started."""
        ...

    async def start(self, host: str, port: int) -> str:
        """Binds and serves; returns the base URL."""
        ...

    async def stop(self) -> None:
        """Closes every socket and the server."""
        ...

    async def wait_until(self, predicate: Callable[[Any], T], timeout: float = 5.0) -> T:  # noqa: ASYNC109 - a deadline for a condition
        """Returns the predicate's first truthy value."""
        ...


E = TypeVar("E", bound=Emulator)


async def _cancel_leftovers() -> None:
    """Calls still in flight from other threads are cancelled so the loop can close cleanly."""
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)


class EmulatorThread(Generic[E]):
    """A started emulator on a private loop, with awaitable thread-safe access for other loops."""

    def __init__(
        self,
        factory: Callable[[], E],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "emulator",
    ) -> None:
        self._factory = factory
        self._host = host
        self._port = port
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._emulator: E | None = None
        self._error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Starts the thread and returns once the emulator serves (blocking)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("emulator thread did not start in time")
        if self._error is not None:
            raise RuntimeError("emulator failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the emulator, closes its loop and joins the thread (blocking, idempotent)."""
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None and not loop.is_closed():
            # The loop may close between the check and the call; then it is stopped already.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_event.set)
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("emulator thread did not stop in time")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        # Starting and joining block, so they run in a worker thread to keep the caller's loop live.
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to start() in the caller's thread
            self._error = exc
        finally:
            loop.run_until_complete(_cancel_leftovers())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            self._ready.set()

    async def _serve(self) -> None:
        self._stop_event = asyncio.Event()
        emulator = self._factory()
        self._emulator = emulator
        try:
            await emulator.start(self._host, self._port)
            self._ready.set()
            await self._stop_event.wait()
        finally:
            await emulator.stop()

    # -- access ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The emulator's base URL."""
        return self.emulator.url

    @property
    def emulator(self) -> E:
        """The emulator itself; only touch it from its own loop (use `call`)."""
        if self._emulator is None:
            raise RuntimeError("emulator thread not started")
        return self._emulator

    def _submit(self, fn: Callable[[E], Any]) -> concurrent.futures.Future[Any]:
        if self._loop is None or self._loop.is_closed():
            raise RuntimeError("emulator thread is not running")
        if threading.current_thread() is self._thread:
            raise RuntimeError("call the emulator directly from its own thread")
        emulator = self.emulator

        async def invoke() -> Any:
            result = fn(emulator)
            if inspect.isawaitable(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop)

    @overload
    async def call(self, fn: Callable[[E], Awaitable[T]]) -> T: ...

    @overload
    async def call(self, fn: Callable[[E], T]) -> T: ...

    async def call(self, fn: Callable[[E], Any]) -> Any:
        """Runs `fn(emulator)` on the emulator's loop, awaiting it if needed; returns the result."""
        return await asyncio.wrap_future(self._submit(fn))

    def call_sync(self, fn: Callable[[E], Any], timeout: float = 10.0) -> Any:
        """`call` for code that has no loop of its own (blocking)."""
        return self._submit(fn).result(timeout)

    async def wait_for(
        self,
        predicate: Callable[[E], T],
        timeout: float = 5.0,  # noqa: ASYNC109 - the deadline is enforced on the emulator's loop
    ) -> T:
        """Waits until `predicate(emulator)` is truthy (checked on every change); returns it."""
        result: T = await self.call(lambda e: e.wait_until(predicate, timeout))
        return result
