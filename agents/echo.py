"""An agent that needs no LLM: it streams the user's words back, word by word."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from agents.base import AgentRequest
from agents.config import EchoAgentConfig

_WORD = re.compile(r"\s*\S+")


def echo_answer(request: AgentRequest) -> str:
    """The full deterministic answer for a request."""
    answer = f"You said: {request.user_text.strip()}".rstrip()
    if request.history:
        # Counting earlier user turns makes history loading visible end to end without an LLM.
        turn = 1 + sum(1 for t in request.history if t.role == "user")
        answer += f" (turn {turn} of this conversation)"
    return answer


class EchoAgent:
    """Streams `You said: <text>` with a pause between words, so cards visibly stream."""

    def __init__(
        self,
        name: str,
        config: EchoAgentConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.config = config
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"EchoAgent(name={self.name!r})"

    async def stream(self, request: AgentRequest) -> AsyncIterator[str]:
        """Yield the answer one word (with its leading space) at a time."""
        for index, word in enumerate(_WORD.findall(echo_answer(request))):
            if index and self.config.delay:
                await self._sleep(self.config.delay)
            yield word

    async def aclose(self) -> None:
        """Nothing to release."""
