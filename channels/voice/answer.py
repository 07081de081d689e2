"""One round of a voice call spoken: the agent's answer streamed to the cloud as SSE chunks, and
the round's turns stored.

The answer comes from the conversation's agent with channeld's own history, so the call knows
the chat and the chat will know the call. The utterance and the answer are stored as voice turns
keyed by the cloud's round: a retried round replaces its turns rather than adding a second pair.
One answer streams per call: a new request cuts the one before, and so does the call's end or
its expiry; a cut answer is stored as far as it was sent, marked interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from agents.base import AgentRequest, Turn
from channels import normalize
from channels.answering import timed
from channels.conversations import AnswerSlots
from channels.emitter import EmitterSettings
from channels.live import ChannelRuntime
from channels.observer import Observer
from channels.voice.sse import ChunkFramer
from channels.voice.streams import CallStreams
from common.errors import ChannelError
from storage.repository import Store, VoiceCallRecord

log = logging.getLogger(__name__)

FAILURE_TEXT = EmitterSettings().failure_text

Write = Callable[[bytes], Awaitable[None]]


class VoiceObserver(Observer, Protocol):
    """What the voice machinery reports, besides what every channel reports."""

    def voice_turn(self, channel: str, provider: str, outcome: str) -> None: ...
    def voice_first_chunk(self, channel: str, provider: str, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class VoiceTurn:
    """A request that passed every check: what to answer, for which call, in which round."""

    call: VoiceCallRecord
    runtime: ChannelRuntime
    utterance: str
    round: str
    model: str
    heard: str | None  # Alibaba: the previous answer as far as it was heard, when cut
    received: float  # time.monotonic() at receipt


class VoiceAnswers:
    """Streams each round's answer from the conversation's agent and stores the round's turns."""

    def __init__(
        self,
        store: Store,
        *,
        slots: AnswerSlots,
        observer: VoiceObserver,
        clock: Callable[[], datetime],
        streams: CallStreams,
        heard: Callable[[str, str], str | None],
    ) -> None:
        self._heard = heard  # what the cloud said was heard of a round, reported ahead
        self._store = store
        self._streams = streams
        self._slots = slots
        self._observer = observer
        self._clock = clock

    async def speak(self, turn: VoiceTurn, write: Write) -> None:
        """Streams the answer through `write` and stores the round's turns.

        One answer streams per call: a new request cuts the one before (the user spoke over
        it), and so does the call's end or its expiry. A cut answer is stored as far as it was
        sent, marked interrupted; a failing agent is answered with a short apology that is
        spoken but not stored.
        """
        call = turn.call
        outcome = "answered"
        parts: list[str] = []
        stored: asyncio.Task[None] | None = None

        def store_utterance() -> None:
            # once the first chunk left (or nothing will be): the write is off the caller's wait
            nonlocal stored
            stored = asyncio.create_task(
                self._store.voice_turn_put(
                    call.conversation_id,
                    call_id=call.id,
                    round=turn.round,
                    role="user",
                    content=turn.utterance,
                    now=self._clock(),
                ),
                name=f"voice-turn-{call.id}",
            )

        with self._streams.streaming(call.id):
            try:
                # nothing is said past the call's end, whoever ends it
                async with asyncio.timeout(self._remaining(call)):
                    if turn.heard is not None:
                        await self._trim_previous(turn)
                    request = await self._request(turn)
                    async with self._slots.hold():
                        outcome = await self._stream(turn, request, write, parts, store_utterance)
            except (ConnectionError, TimeoutError):
                outcome = "cut"  # the cloud closed the stream, or the call ran out of time
            except asyncio.CancelledError:
                outcome = "cut"  # talked over (a newer request), or the call ended
                raise
            finally:
                if stored is None:  # nothing was said: the utterance is stored all the same
                    store_utterance()
                await self._finish(turn, stored, "".join(parts), interrupted=outcome == "cut")
                self._observer.voice_turn(call.channel_id, call.provider, outcome)

    def _remaining(self, call: VoiceCallRecord) -> float:
        return max(0.0, (call.expires_at - self._clock()).total_seconds())

    async def _stream(
        self,
        turn: VoiceTurn,
        request: AgentRequest,
        write: Write,
        parts: list[str],
        first_left: Callable[[], None],
    ) -> str:
        """The agent's deltas framed and written, `parts` holding what was sent; the outcome."""
        call, agent = turn.call, turn.runtime.agent
        framer = ChunkFramer(turn.model)
        pending = ""  # a high surrogate whose low half is in the next delta
        outcome = "answered"
        try:
            async for delta in timed(agent.stream(request), agent.name, self._observer):
                text = pending + delta
                pending = text[-1] if text and "\ud800" <= text[-1] <= "\udbff" else ""
                text = normalize.clean(text[: len(text) - len(pending)])
                if not text:
                    continue
                await write(framer.delta(text))
                if not parts:
                    self._observer.voice_first_chunk(
                        call.channel_id, call.provider, time.monotonic() - turn.received
                    )
                    first_left()
                parts.append(text)
            if pending:
                tail = normalize.clean(pending)  # a half pair at the very end: U+FFFD
                await write(framer.delta(tail))
                parts.append(tail)
        except ChannelError as exc:
            log.warning("voice call %s: the agent failed: %s", call.id, exc)
            outcome = "failed"
            await write(framer.delta((" " if parts else "") + FAILURE_TEXT))
        await write(framer.stop())
        return outcome

    async def _request(self, turn: VoiceTurn) -> AgentRequest:
        call, runtime = turn.call, turn.runtime
        limit = runtime.history_messages
        recent = await self._store.recent_messages(call.conversation_id, limit + 2)
        # a retried round's first attempt is not history: this request answers it again
        history = (
            [m for m in recent if not (m.voice_call_id == call.id and m.voice_round == turn.round)][
                -limit:
            ]
            if limit > 0
            else []
        )
        return AgentRequest(
            system_prompt=runtime.system_prompt,
            history=tuple(
                Turn("user" if m.role == "user" else "assistant", m.content) for m in history
            ),
            user_text=turn.utterance,
            user_id=call.user_id,
            metadata={"source": "voice", "call": call.id},
        )

    async def _trim_previous(self, turn: VoiceTurn) -> None:
        """Alibaba's mark in the history: the previous answer was heard only this far."""
        heard = turn.heard or ""
        last = await self._store.voice_turn_last(turn.call.id, "assistant")
        if last is None or last.interrupted or last.voice_round in (None, turn.round):
            return
        # the mark cuts what was said: anything else is only noted as interrupted, so no text
        # from the cloud takes the assistant's place in the conversation
        text = heard if last.content.startswith(heard.rstrip()) else None
        await self._store.voice_turn_trim(
            turn.call.id, last.voice_round, text=text, now=self._clock()
        )

    async def _finish(
        self, turn: VoiceTurn, stored: asyncio.Task[None] | None, answer: str, *, interrupted: bool
    ) -> None:
        """Waits for the utterance's write, then stores the answer (what was said of it)."""
        call = turn.call
        try:
            if stored is not None:
                await stored
            played = self._heard(call.id, turn.round)
            if played is not None and answer.strip().startswith(played.strip()):
                # the cloud reported the interruption before this write: it was heard this far
                answer, interrupted = played, True
            if answer:
                await self._store.voice_turn_put(
                    call.conversation_id,
                    call_id=call.id,
                    round=turn.round,
                    role="assistant",
                    content=answer,
                    now=self._clock(),
                    interrupted=interrupted,
                    # what the cloud said was heard, stored meanwhile, stays
                    keep_interrupted=True,
                )
        except Exception as exc:  # noqa: BLE001 - any storage failure: logged, the call goes on
            # the type only: a database error's text carries the statement's parameters (what
            # was said)
            log.error(
                "voice call %s: round %s not stored: %s", call.id, turn.round, type(exc).__name__
            )
