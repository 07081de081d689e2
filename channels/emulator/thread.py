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
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, overload

if TYPE_CHECKING:
    from channels.emulator.server import EmulatorServer

T = TypeVar("T")


E = TypeVar("E", bound="EmulatorServer[Any, Any, Any, Any]")


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
        factory: Callable[..., E],
        apps: Iterable[Any],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "emulator",
        **options: Any,
    ) -> None:
        app_list = list(apps)
        self._factory: Callable[[], E] = lambda: factory(app_list, **options)
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

    async def wait_for(
        self,
        predicate: Callable[[E], T],
        timeout: float = 5.0,  # noqa: ASYNC109 - the deadline is enforced on the emulator's loop
    ) -> T:
        """Waits until `predicate(emulator)` is truthy (checked on every change); returns it."""
        result: T = await self.call(lambda e: e.wait_until(predicate, timeout))
        return result

    # -- the most used emulator methods, as awaitable proxies ------------------------------------

    async def send_user_message(self, app_id: str, **kwargs: Any) -> Any:
        """A user writes to the bot (see the emulator's `send_user_message`)."""
        return await self.call(lambda e: e.send_user_message(app_id, **kwargs))

    async def chat_view(self, chat_id: str) -> dict[str, Any] | None:
        """See `EmulatorServer.chat_view`."""
        return await self.call(lambda e: e.chat_view(chat_id))

    async def card(self, card_id: str) -> Any:
        """See `EmulatorServer.card`."""
        return await self.call(lambda e: e.card(card_id))

    async def cards(self) -> list[Any]:
        """See `EmulatorServer.cards`."""
        return await self.call(lambda e: e.cards())

    async def calls(self, path: str | None = None, method: str | None = None) -> list[Any]:
        """See `EmulatorServer.calls`."""
        return await self.call(lambda e: e.calls(path, method))

    async def acks(self, message_id: str | None = None) -> list[Any]:
        """Frames the clients sent back (see the emulator's `acks`)."""
        return await self.call(lambda e: e.acks(message_id))

    async def connections(self, app_id: str | None = None) -> list[Any]:
        """See `EmulatorServer.connections`."""
        return await self.call(lambda e: e.connections(app_id))

    async def live_connections(self, app_id: str | None = None) -> list[Any]:
        """See `EmulatorServer.live_connections`."""
        return await self.call(lambda e: e.live_connections(app_id))

    async def add_fault(self, path_pattern: str, status: int | None = None, **kwargs: Any) -> Any:
        """Injects an HTTP fault (see the emulator's `add_fault`)."""
        return await self.call(lambda e: e.add_fault(path_pattern, status, **kwargs))

    async def clear_faults(self) -> None:
        """See `EmulatorServer.clear_faults`."""
        await self.call(lambda e: e.clear_faults())

    async def set_latency(self, seconds: float) -> None:
        """See `EmulatorServer.set_latency`."""
        await self.call(lambda e: e.set_latency(seconds))

    async def drop(self, app_id: str | None = None, **kwargs: Any) -> int:
        """See `EmulatorServer.drop`."""
        return await self.call(lambda e: e.drop(app_id, **kwargs))

    async def silence(self, app_id: str | None = None, on: bool = True, **kwargs: Any) -> int:
        """See `EmulatorServer.silence`."""
        return await self.call(lambda e: e.silence(app_id, on, **kwargs))

    async def expire_tokens(self) -> int:
        """See `EmulatorServer.expire_tokens`."""
        return await self.call(lambda e: e.expire_tokens())

    async def downtime(self, seconds: float, status: int = 503) -> Any:
        """See `EmulatorServer.downtime` (on the platforms that offer it)."""
        return await self.call(lambda e: e.downtime(seconds, status))
