"""A live channel's runtime travels with its messages; queued ones follow a restarted channel.

The provider and the agent are this unit's leaves (recording fakes); the manager, supervisor,
handler, emitter and a real SQLite store are the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from agents.base import AgentRequest
from channels.commands import QUEUED_TEXT
from channels.config import ChannelConfigBase
from channels.conversations import AnswerSlots
from channels.dingtalk.config import DingTalkChannelConfig
from channels.emitter import EmitterSettings, ResponseEmitter
from channels.handler import MessageHandler
from channels.live import AgentProfile, ChannelRuntime
from channels.manager import ChannelManager
from channels.model import (
    ChannelId,
    ChannelState,
    ChatType,
    Delivered,
    InboundMessage,
    Sender,
    SenderProfile,
)
from channels.observer import Observer
from channels.provider import InboundSink, ReplyStream
from channels.ratelimit import TokenBucket
from storage.repository import Store
from tests.storage_support import sqlite_url

CHANNEL = "dt"


class RecordingStream:
    """A ReplyStream that shows everything at once and remembers the final text."""

    def __init__(self) -> None:
        self.final: str | None = None
        self.failed: str | None = None
        self._text = ""

    @property
    def delivered(self) -> Delivered:
        return Delivered(card_id=None, text=self._text)

    async def update(self, text_so_far: str) -> None:
        self._text = text_so_far

    async def finish(self, final_text: str) -> None:
        self._text = self.final = final_text

    async def fail(self, reason: str, partial_text: str = "") -> None:
        self.failed = reason
        self._text = f"{partial_text}\n\n{reason}"


class RecordingProvider:
    """A connected-at-once provider that records what it was asked to show."""

    platform = "dingtalk"
    last_frame_at = 0.0

    def __init__(self, sink: InboundSink) -> None:
        self.sink = sink
        self.sent: list[str] = []
        self.streams: list[RecordingStream] = []
        self.state = ChannelState.DISCONNECTED
        self._closed = asyncio.Event()

    @property
    def channel_id(self) -> ChannelId:
        return ChannelId(CHANNEL)

    async def start(self) -> None:
        self.state = ChannelState.CONNECTED

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()

    async def sender_profile(self, message: InboundMessage) -> SenderProfile:
        return SenderProfile()  # a platform that tells nothing about its senders

    async def send(self, message: InboundMessage, text: str) -> None:
        self.sent.append(text)

    async def open_stream(self, message: InboundMessage) -> ReplyStream:
        self.streams.append(RecordingStream())
        return self.streams[-1]

    async def resume_stream(self, message: InboundMessage, card_id: str, shown: str) -> ReplyStream:
        raise NotImplementedError

    def answers(self) -> list[str | None]:
        return [stream.final for stream in self.streams]


class GatedAgent:
    """Answers `answer to <text>`; the first question waits until the test opens the gate."""

    name = "gated"

    def __init__(self) -> None:
        self.questions: list[str] = []
        self.gate = asyncio.Event()

    async def stream(self, request: AgentRequest) -> AsyncIterator[str]:
        self.questions.append(request.user_text)
        if len(self.questions) == 1:
            await self.gate.wait()
        yield f"answer to {request.user_text}"

    async def aclose(self) -> None:
        """Nothing to release."""


def inbound(message_id: str, words: str) -> InboundMessage:
    return InboundMessage(
        channel_id=ChannelId(CHANNEL),
        platform="dingtalk",
        message_id=message_id,
        chat_id="chat-1",
        chat_type=ChatType.DIRECT,
        sender=Sender("user-1"),
        text=words,
        received_at=datetime.now(UTC),
    )


def runtime_for(provider: RecordingProvider, agent: GatedAgent) -> ChannelRuntime:
    config = DingTalkChannelConfig(id=CHANNEL, client_id="x", client_secret="y")
    emitter = ResponseEmitter(TokenBucket(100, 10), EmitterSettings(min_interval=0.05))
    return ChannelRuntime(config, provider, agent, "", 10, emitter)


async def wait_until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(sqlite_url(tmp_path / "live.db"))
    yield opened
    await opened.close()


async def journal(store: Store) -> list[tuple[str, str | None]]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(text("SELECT state, error FROM inbound_journal ORDER BY id"))
        return [(row.state, row.error) for row in rows]


async def never_used(_message: InboundMessage) -> None:
    """The sink of providers built by hand: the handler tests accept messages themselves."""
    raise AssertionError("unused")


async def test_a_running_runtime_is_current_and_a_stopped_one_hands_over() -> None:
    agent = GatedAgent()
    first, second, third, gone = (runtime_for(RecordingProvider(never_used), agent) for _ in "1234")
    assert await first.current() is first
    first.retire()
    waiters = [asyncio.create_task(first.current()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)  # nothing decided yet: the waiters wait
    waiters[0].cancel()  # e.g. a /stop: the others keep waiting for the same answer
    with contextlib.suppress(asyncio.CancelledError):
        await waiters[0]
    second.retire()
    second.replaced_by(third)
    first.replaced_by(second)
    first.replaced_by(None)  # set once: a later word changes nothing
    assert [await w for w in waiters[1:]] == [third, third]  # followed to the end of the chain
    gone.retire()
    gone.replaced_by(None)
    assert await gone.current() is None


@pytest.mark.parametrize("restarted", [True, False], ids=["restarted", "disabled"])
async def test_a_queued_message_follows_its_channel(store: Store, restarted: bool) -> None:
    agent = GatedAgent()
    old = RecordingProvider(never_used)
    new = RecordingProvider(never_used)
    old_runtime, new_runtime = runtime_for(old, agent), runtime_for(new, agent)
    handler = MessageHandler(store, slots=AnswerSlots(4))
    try:
        await handler.accept(inbound("m1", "first"), old_runtime)
        await wait_until(lambda: agent.questions == ["first"])
        await handler.accept(inbound("m2", "second"), old_runtime)
        await wait_until(lambda: old.sent == [QUEUED_TEXT.format(ahead=1)])
        old_runtime.retire()  # the manager stops the channel; the answer in progress goes on
        agent.gate.set()
        await wait_until(lambda: old.answers() == ["answer to first"])
        await asyncio.sleep(0.05)
        assert agent.questions == ["first"]  # the queued one waits to learn what replaced it
        old_runtime.replaced_by(new_runtime if restarted else None)
        await wait_until(lambda: not handler.busy())
    finally:
        await handler.close()
    if restarted:
        assert agent.questions == ["first", "second"]
        assert new.answers() == ["answer to second"]
        assert await journal(store) == [("replied", None), ("replied", None)]
    else:
        assert agent.questions == ["first"]
        assert new.streams == []
        assert await journal(store) == [("replied", None), ("failed", "channel stopped")]
    assert old.answers() == ["answer to first"]


async def test_the_manager_builds_providers_through_supervisors_and_hands_runtimes_over(
    store: Store,
) -> None:
    built: list[RecordingProvider] = []

    def build(
        config: ChannelConfigBase, sink: InboundSink, _observer: Observer
    ) -> RecordingProvider:
        assert config.id == CHANNEL
        built.append(RecordingProvider(sink))
        return built[-1]

    agent = GatedAgent()
    manager = ChannelManager(
        store,
        build_provider=build,
        agents={"default": AgentProfile(agent, "", 10)},
        answer_slots=AnswerSlots(4),
        digest_key=b"key",
    )
    config = DingTalkChannelConfig(id=CHANNEL, client_id="x", client_secret="y")
    try:
        await manager.start([config])
        first = manager.runtime(CHANNEL)
        supervisor = manager.supervisor(CHANNEL)
        assert first is not None and supervisor is not None
        assert len(built) == 1
        assert first.provider is supervisor.provider is built[0]  # the supervisor's provider
        await wait_until(lambda: manager.status(CHANNEL).state is ChannelState.CONNECTED)

        # the sink the provider was given journals with this channel's runtime, counted once
        agent.gate.set()
        await built[0].sink(inbound("m1", "hello"))
        await wait_until(lambda: built[0].answers() == ["answer to hello"])
        await wait_until(lambda: not manager.handler.busy())
        assert manager.status(CHANNEL).messages_received == 1

        assert await manager.restart(CHANNEL)
        second = manager.runtime(CHANNEL)
        assert second is not None and second is not first
        assert len(built) == 2
        assert await first.current() is second
        assert await manager.set_enabled(CHANNEL, False)
        assert await first.current() is None
        assert await second.current() is None
    finally:
        await manager.close()
    assert await journal(store) == [("replied", None)]


@pytest.mark.parametrize("restarted", [True, False], ids=["restarted", "disabled"])
async def test_an_answer_that_showed_nothing_when_its_channel_stopped_follows_the_channel(
    store: Store, restarted: bool
) -> None:
    """Waiting for an answer slot (another conversation holds the only one) when its channel
    stops: it begins on what replaced the channel, never on the stopped one."""
    agent = GatedAgent()
    old = RecordingProvider(never_used)
    new = RecordingProvider(never_used)
    old_runtime, new_runtime = runtime_for(old, agent), runtime_for(new, agent)
    handler = MessageHandler(store, slots=AnswerSlots(1))
    other_chat = replace(inbound("m1", "first"), chat_id="chat-2")
    try:
        await handler.accept(other_chat, old_runtime)
        await wait_until(lambda: agent.questions == ["first"])  # holds the only slot
        await handler.accept(inbound("m2", "second"), old_runtime)
        # the second one begun too: it waits for the slot
        await wait_until(lambda: len(handler._answerer.answering_on(old_runtime)) == 2)
        await asyncio.sleep(0.05)
        assert agent.questions == ["first"]
        old_runtime.retire()
        old_runtime.replaced_by(new_runtime if restarted else None)
        agent.gate.set()
        await wait_until(lambda: not handler.busy())
    finally:
        await handler.close()
    assert old.answers() == ["answer to first"]  # began before the stop: ended where it began
    if restarted:
        assert new.answers() == ["answer to second"]
        assert await journal(store) == [("replied", None), ("replied", None)]
    else:
        assert new.streams == []
        assert await journal(store) == [("replied", None), ("failed", "channel stopped")]
    assert agent.questions == (["first", "second"] if restarted else ["first"])  # asked once
