"""An agent's answer read from the moment it is asked for: the LLM request leaves while the card
is still being created, and whoever delivers the answer takes the text so far when it can."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

log = logging.getLogger(__name__)


class PrefetchedAnswer:
    """The one task that reads an agent's deltas, and the text they add up to.

    Reading never waits on the consumer (latest wins: the consumer takes `text` whenever it is
    ready, and intermediate states it missed are never queued). `changed` is set on new text and
    at the end; the consumer clears it. `result()` raises what the agent raised, after the text
    that came before it. The owner must call `aclose()`: the task outlives a consumer that stops
    early, and with it the source (e.g. an HTTP request).
    """

    def __init__(self, deltas: AsyncIterator[str], *, name: str = "answer") -> None:
        self.changed = asyncio.Event()
        self.ended = asyncio.Event()
        self._parts: list[str] = []
        self._text = ""
        self._error: Exception | None = None
        self._task = asyncio.create_task(self._read(deltas), name=name)

    @property
    def text(self) -> str:
        """Everything read so far (joined lazily: a delta costs an append, not a copy)."""
        if self._parts:
            self._text += "".join(self._parts)
            self._parts.clear()
        return self._text

    @property
    def done(self) -> bool:
        """The agent finished, failed, or the reading was stopped."""
        return self.ended.is_set()

    async def _read(self, deltas: AsyncIterator[str]) -> None:
        try:
            async for delta in deltas:
                if delta:
                    self._parts.append(delta)
                    self.changed.set()
        except Exception as exc:  # noqa: BLE001 - handed to the consumer by result()
            self._error = exc
        finally:
            self.ended.set()
            self.changed.set()
            aclose = getattr(deltas, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def result(self) -> str:
        """The whole text once the agent is done; raises the agent's error if it failed."""
        await self.ended.wait()
        if self._error is not None:
            raise self._error
        return self.text

    async def aclose(self, within: float | None = None) -> None:
        """Stop reading (and the source with it); idempotent. With `within`, give up waiting
        for a source that ignores cancellation after that many seconds, and say so."""
        if not self._task.done():
            self._task.cancel()
            # wait() neither raises the reader's cancellation nor swallows our own
            await asyncio.wait({self._task}, timeout=within)
            if not self._task.done():
                log.error("the agent stream ignored cancellation; abandoning it")
