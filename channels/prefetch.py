"""Start reading an async iterator now, consume it later: the LLM request leaves while the card
is still being created, instead of after it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class Prefetched(Generic[T]):
    """An async iterator over `source` whose reading began at construction.

    Items, the end and the source's exception come out in order. `aclose()` stops the reading
    task (and with it the source, e.g. an HTTP request) if nobody consumed it to the end; it must
    be called by the owner, as the task outlives any consumer that stops early.
    """

    def __init__(self, source: AsyncIterator[T], name: str = "prefetch") -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._done = False
        self._task = asyncio.create_task(self._pump(source), name=name)

    async def _pump(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                self._queue.put_nowait(item)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, in order
            self._queue.put_nowait(exc)
        else:
            self._queue.put_nowait(_END)
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def __aiter__(self) -> Prefetched[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, Exception):
            self._done = True
            raise item
        return item  # type: ignore[return-value]  # only the source's items remain

    async def aclose(self) -> None:
        """Stop reading; idempotent."""
        self._done = True
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
