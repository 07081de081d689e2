"""What the emulated cloud remembers of a call: its rounds (what the caller said, what the agent
answered and what was heard of it) and its own context, the short memory each cloud keeps
server-side and sends the LLM with every utterance."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from channels.voice.emulator.llm import Reply

Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": ...}


def now_ms() -> int:
    """Wall-clock milliseconds, the clouds' timestamps."""
    return int(time.time() * 1000)


@dataclass
class Turn:
    """One round: the caller's utterance and the agent's answer."""

    round: int  # ZEGO's round_id, Alibaba's sentenceId
    user: str
    at: int  # wall-clock ms when the caller spoke
    context_mark: int  # how long the call's context was before this round
    seen: bool = True  # sent to the endpoint (Alibaba's unseen rounds are only recorded)
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)  # the request, for a repeat
    reply: Reply | None = None
    answer: str | None = None  # what the agent says; None: nothing
    played: str | None = None  # what was heard before an interruption; None: not interrupted
    answered_at: int = 0  # wall-clock ms when the answer ended

    @property
    def interrupted(self) -> bool:
        """The caller spoke over the answer."""
        return self.played is not None

    @property
    def heard(self) -> str:
        """What the caller heard of the answer."""
        if self.played is not None:
            return self.played
        return self.answer or ""

    @property
    def error(self) -> str:
        """Why the agent said nothing, "" when it spoke (or the round was never sent)."""
        return self.reply.error if self.reply is not None else ""

    def result(self) -> dict[str, Any]:
        """What `POST say` and `POST repeat` answer."""
        reply = self.reply
        result: dict[str, Any] = {
            "round": self.round,
            "answer": self.answer,
            "chunks": reply.chunks if reply else 0,
            "first_chunk_ms": reply.first_chunk_ms if reply else None,
            "status": reply.status if reply else None,
        }
        if self.error:
            result["error"] = self.error
        return result

    def view(self) -> dict[str, Any]:
        """How `GET calls` shows the round."""
        return {
            "round": self.round,
            "user": self.user,
            "agent": self.answer,
            "interrupted": self.interrupted,
            "played": self.played,
            "error": self.error,
            "seen": self.seen,
        }


@dataclass
class Call:
    """One agent instance: who it talks to, its rounds and its context."""

    instance_id: str
    user_id: str
    started_at: int  # wall-clock ms
    context: list[Message] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    active: bool = True
    ended: str = ""  # why it ended, "" while active
    # one round at a time: a caller does not speak twice at once, and a repeat or an
    # interruption must see the round it changes finished
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)

    def last_turn(self) -> Turn:
        """The latest round; LookupError when there is none."""
        if not self.turns:
            raise LookupError(f"call {self.instance_id} has no round yet")
        return self.turns[-1]

    def remember(self, turn: Turn, answer: str | None) -> None:
        """Puts the round into the context: the utterance, then `answer` if the agent said one."""
        del self.context[turn.context_mark :]
        self.context.append({"role": "user", "content": turn.user})
        if answer:
            self.context.append({"role": "assistant", "content": answer})

    def view(self, llm_url: str) -> dict[str, Any]:
        """How `GET calls` shows the call; a cloud adds its own ids."""
        return {
            "instance_id": self.instance_id,
            "active": self.active,
            "ended": self.ended,
            "user_id": self.user_id,
            "llm_url": llm_url,
            "turns": [t.view() for t in self.turns],
        }
