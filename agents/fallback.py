"""Answer with a second agent when the first fails before saying anything."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from agents.base import Agent, AgentRequest
from agents.circuit import CircuitOpen
from common.errors import ChannelError

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def closing_stream(deltas: AsyncIterator[str]) -> AsyncIterator[AsyncIterator[str]]:
    """Close an agent's stream on exit when it can be closed (async generators can)."""
    try:
        yield deltas
    finally:
        aclose: Any = getattr(deltas, "aclose", None)  # the Agent protocol does not promise it
        if aclose is not None:
            await aclose()


class FallbackAgent:
    """Streams from `primary`; on a classified error before its first delta, from `secondary`.

    After a delta the error is re-raised: the user has already seen part of the answer, and a
    second answer appended to it would read as nonsense.
    """

    def __init__(self, primary: Agent, secondary: Agent) -> None:
        self.name = primary.name
        self.primary = primary
        self.secondary = secondary

    def __repr__(self) -> str:
        return f"FallbackAgent({self.primary!r} -> {self.secondary!r})"

    async def stream(self, request: AgentRequest) -> AsyncIterator[str]:
        """Yield the primary's deltas, or the secondary's if the primary fails up front."""
        yielded = False
        try:
            async with closing_stream(self.primary.stream(request)) as deltas:
                async for delta in deltas:
                    yielded = True
                    yield delta
            return
        except ChannelError as exc:
            if yielded:
                raise
            # Classified messages carry no secrets by contract, so the reason can be logged; an
            # open breaker was already logged once when it opened, not again on every message.
            logger.log(
                logging.DEBUG if isinstance(exc, CircuitOpen) else logging.WARNING,
                "agent %r failed before answering (%s: %s); answering with %r",
                self.primary.name,
                type(exc).__name__,
                exc,
                self.secondary.name,
            )
        async with closing_stream(self.secondary.stream(request)) as deltas:
            async for delta in deltas:
                yield delta

    async def aclose(self) -> None:
        """Close the primary only: the secondary is shared and closed by whoever built it."""
        await self.primary.aclose()
