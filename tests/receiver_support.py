"""A loopback stand-in for the daemon's callback listener, for tests of an emulator's callbacks.

`HookReceiver` serves `POST /hooks/{channel_id}` on 127.0.0.1:0, keeps what `answer` records of
each POST in `received`, and answers the scripted `statuses` (then `default_status`, 200). A
platform's support module subclasses it with what it records and how it answers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Generic, Self, TypeVar

from aiohttp import web

R = TypeVar("R")

__all__ = ["HookReceiver"]


class HookReceiver(Generic[R]):
    """A loopback callback endpoint answering scripted statuses."""

    def __init__(self, statuses: Iterable[int] = (), channel_id: str = "main") -> None:
        self.statuses: deque[int] = deque(statuses)
        self.default_status = 200
        self.channel_id = channel_id
        self.received: list[R] = []
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/hooks/{channel_id}", self.answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, channel_id: str | None = None) -> str:
        """The callback URL to configure."""
        return f"{self.base}/hooks/{channel_id or self.channel_id}"

    def next_status(self) -> int:
        """The next scripted status, else the default."""
        return self.statuses.popleft() if self.statuses else self.default_status

    async def answer(self, request: web.Request) -> web.StreamResponse:
        """Records the POST (`record`) and answers it; overridden for richer answers."""
        status = self.next_status()
        self.record(await self.received_from(request, status))
        return web.Response(status=status)

    async def received_from(self, request: web.Request, status: int) -> R:
        """What is kept of a POST answered with `status`."""
        raise NotImplementedError

    def record(self, item: R) -> None:
        """Keeps `item` and wakes everyone waiting for POSTs."""
        self.received.append(item)
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    async def until(self, enough: Callable[[list[R]], bool], timeout: float = 5.0) -> None:
        """Returns once `enough(received)` holds."""
        async with asyncio.timeout(timeout):
            while not enough(self.received):
                await self._arrived.wait()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[R]:
        """The first `count` POSTs, once they arrived."""
        await self.until(lambda received: len(received) >= count, timeout)
        return self.received[:count]
