"""Runs a `DingTalkEmulator` on its own event loop in a background thread.

The 0.24.3 SDK makes blocking `requests` calls from inside its coroutines; an emulator served by
the same loop would never answer them (reference §4.3). A thread also keeps the emulator off the
loop a test measures. Every query method of the emulator returns a snapshot, so results handed
back across threads do not change under the caller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar, overload

from channels.dingtalk.emulator_gateway import ConnectionInfo
from channels.dingtalk.emulator_payloads import UserMessage
from channels.dingtalk.emulator_server import DEFAULT_APPS, DingTalkEmulator
from channels.dingtalk.emulator_state import AckRecord, AppSpec, CallRecord, CardState, Fault

T = TypeVar("T")


async def _cancel_leftovers() -> None:
    """Calls still in flight from other threads are cancelled so the loop can close cleanly."""
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)


class EmulatorThread:
    """A started emulator on a private loop, with awaitable thread-safe access for other loops."""

    def __init__(
        self,
        apps: Iterable[AppSpec] = DEFAULT_APPS,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **options: Any,
    ) -> None:
        self._apps = list(apps)
        self._host = host
        self._port = port
        self._options = options
        self._thread = threading.Thread(target=self._run, name="dingtalk-emulator", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._emulator: DingTalkEmulator | None = None
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
        emulator = DingTalkEmulator(self._apps, **self._options)
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
    def emulator(self) -> DingTalkEmulator:
        """The emulator itself; only touch it from its own loop (use `call`)."""
        if self._emulator is None:
            raise RuntimeError("emulator thread not started")
        return self._emulator

    def _submit(self, fn: Callable[[DingTalkEmulator], Any]) -> concurrent.futures.Future[Any]:
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
    async def call(self, fn: Callable[[DingTalkEmulator], Awaitable[T]]) -> T: ...

    @overload
    async def call(self, fn: Callable[[DingTalkEmulator], T]) -> T: ...

    async def call(self, fn: Callable[[DingTalkEmulator], Any]) -> Any:
        """Runs `fn(emulator)` on the emulator's loop, awaiting it if needed; returns the result."""
        return await asyncio.wrap_future(self._submit(fn))

    def call_sync(self, fn: Callable[[DingTalkEmulator], Any], timeout: float = 10.0) -> Any:
        """`call` for code that has no loop of its own (blocking)."""
        return self._submit(fn).result(timeout)

    async def wait_for(
        self,
        predicate: Callable[[DingTalkEmulator], T],
        timeout: float = 5.0,  # noqa: ASYNC109 - the deadline is enforced on the emulator's loop
    ) -> T:
        """Waits until `predicate(emulator)` is truthy (checked on every change); returns it."""
        result: T = await self.call(lambda e: e.wait_until(predicate, timeout))
        return result

    # -- the most used emulator methods, as awaitable proxies ------------------------------------

    async def send_user_message(self, client_id: str, **kwargs: Any) -> UserMessage:
        """See `DingTalkEmulator.send_user_message`."""
        return await self.call(lambda e: e.send_user_message(client_id, **kwargs))

    async def chat_view(self, conversation_id: str) -> dict[str, Any] | None:
        """See `DingTalkEmulator.chat_view`."""
        return await self.call(lambda e: e.chat_view(conversation_id))

    async def card(self, out_track_id: str) -> CardState | None:
        """See `DingTalkEmulator.card`."""
        return await self.call(lambda e: e.card(out_track_id))

    async def calls(self, path: str | None = None, method: str | None = None) -> list[CallRecord]:
        """See `DingTalkEmulator.calls`."""
        return await self.call(lambda e: e.calls(path, method))

    async def acks(self, message_id: str | None = None) -> list[AckRecord]:
        """See `DingTalkEmulator.acks`."""
        return await self.call(lambda e: e.acks(message_id))

    async def live_connections(self, client_id: str | None = None) -> list[ConnectionInfo]:
        """See `DingTalkEmulator.live_connections`."""
        return await self.call(lambda e: e.live_connections(client_id))

    async def add_fault(self, path_pattern: str, status: int | None = None, **kwargs: Any) -> Fault:
        """See `DingTalkEmulator.add_fault`."""
        return await self.call(lambda e: e.add_fault(path_pattern, status, **kwargs))

    async def drop(self, client_id: str, **kwargs: Any) -> int:
        """See `DingTalkEmulator.drop`."""
        return await self.call(lambda e: e.drop(client_id, **kwargs))

    async def system_disconnect(self, client_id: str, **kwargs: Any) -> int:
        """See `DingTalkEmulator.system_disconnect`."""
        return await self.call(lambda e: e.system_disconnect(client_id, **kwargs))

    async def silence(self, client_id: str, on: bool = True) -> int:
        """See `DingTalkEmulator.silence`."""
        return await self.call(lambda e: e.silence(client_id, on))

    async def expire_tokens(self) -> int:
        """See `DingTalkEmulator.expire_tokens`."""
        return await self.call(lambda e: e.expire_tokens())

    async def expire_sessions(self) -> int:
        """See `DingTalkEmulator.expire_sessions`."""
        return await self.call(lambda e: e.expire_sessions())


def run_in_thread(apps: Iterable[AppSpec] = DEFAULT_APPS, **kwargs: Any) -> EmulatorThread:
    """Starts an emulator thread (blocking until it serves); `stop()` it when done."""
    return EmulatorThread(apps, **kwargs).start()
