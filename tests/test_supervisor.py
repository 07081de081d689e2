"""Supervisor policy against a scripted provider: the provider is this unit's leaf."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from channels.model import (
    ChannelId,
    ChannelState,
    ChatType,
    InboundMessage,
    Sender,
    SenderProfile,
)
from channels.provider import InboundSink, ReplyStream
from channels.supervisor import Supervisor
from common.backoff import Backoff
from common.errors import AuthError, TransientError
from tests.agents_support import RecordingSleep


class ScriptedProvider:
    """start() outcomes come from a script; sessions end when the test says so."""

    platform = "test"

    def __init__(self, starts: list[BaseException | None]) -> None:
        self.starts = deque(starts)
        self.start_calls = 0
        self.closed = 0
        self.session_end: asyncio.Future[BaseException | None] | None = None
        self.state = ChannelState.DISCONNECTED
        self.last_frame_at = 0.0
        self.started = asyncio.Event()

    @property
    def channel_id(self) -> ChannelId:
        return ChannelId("c1")

    async def start(self) -> None:
        self.start_calls += 1
        outcome = self.starts.popleft() if self.starts else None
        if outcome is not None:
            raise outcome
        self.session_end = asyncio.get_running_loop().create_future()
        self.started.set()

    async def wait_closed(self) -> None:
        assert self.session_end is not None
        reason = await self.session_end
        if reason is not None:
            raise reason

    def end_session(self, reason: BaseException | None) -> None:
        assert self.session_end is not None
        self.started.clear()
        self.session_end.set_result(reason)

    async def close(self) -> None:
        self.closed += 1

    async def sender_profile(self, message: InboundMessage) -> SenderProfile:
        return SenderProfile()  # a platform that tells nothing about its senders

    async def send(self, message: InboundMessage, text: str) -> None:
        raise NotImplementedError

    async def open_stream(self, message: InboundMessage) -> ReplyStream:
        raise NotImplementedError

    async def resume_stream(self, message: InboundMessage, card_id: str, shown: str) -> ReplyStream:
        raise NotImplementedError


async def ignore(_message: InboundMessage) -> None:
    """An inbound sink: these tests never receive a message."""


def supervising(provider: ScriptedProvider, **options: Any) -> Supervisor:
    """A supervisor that builds `provider` (this unit's leaf) as the one it owns."""
    supervisor = Supervisor("c1", lambda _sink: provider, sink=ignore, **options)
    assert supervisor.provider is provider
    return supervisor


async def wait_until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.001)


async def wait_for_state(supervisor: Supervisor, state: ChannelState) -> None:
    await wait_until(lambda: supervisor.state is state)


async def test_transient_failures_back_off_exponentially_and_never_give_up() -> None:
    provider = ScriptedProvider([TransientError("down")] * 12)
    sleep = RecordingSleep()
    backoff = Backoff(initial=1.0, maximum=30.0)
    supervisor = supervising(provider, backoff=backoff, sleep=sleep, rng=random.Random(7))
    supervisor.start()
    await wait_for_state(supervisor, ChannelState.CONNECTED)
    assert provider.start_calls == 13
    assert len(sleep.delays) == 12
    for attempt, delay in enumerate(sleep.delays, start=1):
        ceiling = min(30.0, 2.0 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert max(sleep.delays) <= 30.0
    assert supervisor.status().last_error == "TransientError: down"
    await supervisor.stop()
    assert provider.closed == 1
    assert supervisor.state is ChannelState.DISABLED


async def test_rejected_credentials_end_in_failed_without_retry() -> None:
    provider = ScriptedProvider([AuthError("open connection: HTTP 401 InvalidAuthentication")])
    sleep = RecordingSleep()
    supervisor = supervising(provider, sleep=sleep)
    supervisor.start()
    await wait_for_state(supervisor, ChannelState.FAILED)
    await asyncio.sleep(0.05)
    assert provider.start_calls == 1
    assert sleep.delays == []
    status = supervisor.status()
    assert status.last_error is not None
    assert "401" in status.last_error


async def test_connected_only_after_handshake_and_reconnects_counted() -> None:
    provider = ScriptedProvider([])
    sleep = RecordingSleep()
    supervisor = supervising(provider, sleep=sleep)
    supervisor.start()
    await wait_for_state(supervisor, ChannelState.CONNECTED)
    first = supervisor.status()
    assert first.connected_at is not None
    assert first.reconnects == 0
    provider.end_session(TransientError("gateway closed the socket (code 1011)"))
    await wait_until(lambda: supervisor.status().reconnects == 1)
    assert supervisor.state is ChannelState.CONNECTED
    assert len(sleep.delays) == 1
    provider.end_session(None)  # SYSTEM disconnect: move at once, no backoff
    await wait_until(lambda: supervisor.status().reconnects == 2)
    assert len(sleep.delays) == 1
    await supervisor.stop()


async def test_auth_error_during_session_is_failed() -> None:
    provider = ScriptedProvider([])
    supervisor = supervising(provider, sleep=RecordingSleep())
    supervisor.start()
    await wait_for_state(supervisor, ChannelState.CONNECTED)
    provider.end_session(AuthError("credentials revoked"))
    await wait_for_state(supervisor, ChannelState.FAILED)
    assert supervisor.status().last_error == "AuthError: credentials revoked"


async def test_stop_is_bounded_and_leaves_no_task() -> None:
    provider = ScriptedProvider([TransientError("down")] * 100)
    supervisor = supervising(provider, backoff=Backoff(initial=60, maximum=60))
    supervisor.start()
    await wait_for_state(supervisor, ChannelState.DISCONNECTED)
    before = {t for t in asyncio.all_tasks() if t.get_name().startswith("supervisor-")}
    assert before
    async with asyncio.timeout(2):
        await supervisor.stop()
    after = {
        t for t in asyncio.all_tasks() if t.get_name().startswith("supervisor-") and not t.done()
    }
    assert after == set()


async def test_the_provider_is_built_once_with_a_sink_that_counts_and_passes_on() -> None:
    passed_on: list[InboundMessage] = []

    async def downstream(message: InboundMessage) -> None:
        passed_on.append(message)

    sinks: list[InboundSink] = []

    def build(sink: InboundSink) -> ScriptedProvider:
        sinks.append(sink)
        return ScriptedProvider([])

    supervisor = Supervisor("c1", build, sink=downstream)
    assert len(sinks) == 1  # built at construction, before anything runs
    assert isinstance(supervisor.provider, ScriptedProvider)
    assert supervisor.status().messages_received == 0
    message = InboundMessage(
        channel_id=ChannelId("c1"),
        platform="test",
        message_id="m1",
        chat_id="chat",
        chat_type=ChatType.DIRECT,
        sender=Sender("u1"),
        text="hi",
        received_at=datetime.now(UTC),
    )
    before = time.time()
    await sinks[0](message)
    assert passed_on == [message]
    status = supervisor.status()
    assert status.messages_received == 1
    assert status.last_event_at is not None
    assert status.last_event_at >= before


@pytest.mark.parametrize("attempt", [1, 2, 5, 20])
def test_backoff_delay_is_bounded(attempt: int) -> None:
    backoff = Backoff(initial=0.5, maximum=10)
    rng = random.Random(1)
    ceiling = min(10.0, 0.5 * 2 ** (attempt - 1))
    for _ in range(50):
        assert ceiling / 2 <= backoff.delay(attempt, rng) <= ceiling
