"""What every emulator that calls the bot's server shares (webhook pushes, callbacks): an HTTP
client on the emulator's loop, background tasks that end when it stops, and one POST's answer or
why there was none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL


@dataclass(frozen=True, slots=True)
class Answer:
    """What the bot's server answered to one POST."""

    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    text: str
    elapsed: float  # seconds from sending to the whole answer (or to the failure)
    error: str  # why there was no answer, "" when there was one


class Outbound:
    """Posts JSON to the bot's server, and runs what does so in the background until stopped."""

    def __init__(self, *, timeout: float, headers: Mapping[str, str] | None = None) -> None:
        self.timeout = timeout
        self._headers = dict(headers or {})
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: aiohttp.ClientSession | None = None

    def start(self) -> None:
        """Opens the HTTP client on the running loop."""
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout), headers=self._headers
        )

    async def stop(self) -> None:
        """Cancels the background tasks (retries, late answers, loops) and closes the client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Runs `coro` in the background until it ends or the sender stops."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def post(self, url: str | URL, data: bytes) -> Answer:
        """POSTs `data` as `application/json`; the answer, or why there was none."""
        if self._http is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        started = time.monotonic()
        try:
            async with self._http.post(
                url, data=data, headers={"Content-Type": "application/json"}
            ) as resp:
                text = await resp.text(errors="replace")
                return Answer(resp.status, text, time.monotonic() - started, "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            return Answer(None, "", time.monotonic() - started, error)
