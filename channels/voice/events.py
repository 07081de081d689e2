"""What a voice cloud's callback tells channeld, whichever cloud sent it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The cloud ended the agent instance (hang-up, idle user, error, our own stop)."""

    instance_id: str
    reason: str  # short, for logs and the call's end_reason: "hangup", "idle", "code 1202", ...


@dataclass(frozen=True, slots=True)
class TurnInterrupted:
    """The user spoke over the agent: only `played_text` of the round's answer was heard."""

    instance_id: str
    round: str
    played_text: str | None  # None: the cloud did not say how much was played


@dataclass(frozen=True, slots=True)
class TurnTranscript:
    """One side of a round as the cloud recorded it (ASR result, LLM result, chat record)."""

    instance_id: str
    round: str
    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """An event channeld takes note of and otherwise ignores (status, latency, audio)."""

    instance_id: str
    name: str


VoiceEvent = CallEnded | TurnInterrupted | TurnTranscript | OtherEvent
