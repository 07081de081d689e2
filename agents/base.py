"""The agent contract: a request in, a stream of text deltas out, errors classified."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class AgentRequest:
    system_prompt: str
    history: tuple[Turn, ...]
    user_text: str
    user_id: str = ""  # internal user id, forwarded as the OpenAI `user` field
    metadata: dict[str, str] = field(default_factory=dict)


class Agent(Protocol):
    """Streams an answer. Raises common.errors classes (TransientError, RateLimited, AuthError,
    PermanentError) when it cannot."""

    name: str

    def stream(self, request: AgentRequest) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...
