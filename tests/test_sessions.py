"""SessionProvider, the lifecycle both platform providers share, on a toy platform.

The toy platform's session is a real `SessionSocket` to a websocket server on port 0
(tests/websocket_support.py): JSON objects are messages, "bye" ends the session normally,
anything else is an unreadable frame. Its HTTP client and message sender are leaves that record
what they are asked.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidStatus

from channels.cards import CardReplyStream, MessageSender
from channels.config import ChannelConfigBase
from channels.connection import SessionSocket
from channels.model import ChannelState, ChatType, InboundMessage, Sender
from channels.observer import NullObserver
from channels.provider import ChannelProvider
from channels.sessions import SessionProvider
from common.errors import AuthError, PermanentError, TransientError
from tests.websocket_support import Gateway, gateway

__all__ = ["gateway"]


class ToyConfig(ChannelConfigBase):
    type: Literal["toy"] = "toy"
    url: str


class ToyApi:
    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


class ToySender:
    limit = 12

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def measure(self, text: str) -> int:
        return len(text)

    async def send(self, message: InboundMessage, text: str, purpose: str) -> None:
        self.sent.append((purpose, text))


class ToyReply(CardReplyStream):
    def __init__(
        self, sender: MessageSender, message: InboundMessage, create_error: BaseException | None
    ) -> None:
        super().__init__(sender, message)
        self._create_error = create_error

    async def _create_card(self) -> str | None:
        if self._create_error is not None:
            raise self._create_error
        return "card-1"

    async def _show(self, text: str) -> None:
        self._card_text = text

    async def _end_card(self, text: str, *, failed: bool) -> None:
        self._card_text = text


class ToySession:
    def __init__(
        self,
        url: str,
        on_message: Callable[[dict[str, Any]], Awaitable[None]],
        on_drop: Callable[[str], None],
        *,
        open_error: BaseException | None,
        hang_on_close: bool,
    ) -> None:
        self.socket = SessionSocket("toy gateway", logging.getLogger("test.toy"), on_drop)
        self._url = url
        self._on_message = on_message
        self._open_error = open_error
        self._hang_on_close = hang_on_close
        self.closes = 0

    async def open(self) -> None:
        if self._open_error is not None:
            raise self._open_error
        await self.socket.connect(self._url, rejected=self._rejected)

    @staticmethod
    def _rejected(exc: InvalidStatus) -> Exception:
        return AuthError(f"HTTP {exc.response.status_code}")

    async def run(self) -> None:
        while True:
            raw = await self.socket.receive(30)
            if raw == "bye":
                return
            message = self.socket.json_object(raw, "frame")
            if message is not None:
                await self._on_message(message)

    async def close(self) -> None:
        self.closes += 1
        if self._hang_on_close:
            await asyncio.Event().wait()  # a close that never finishes: close() must not wait
        await self.socket.close()


class Counts(NullObserver):
    def __init__(self) -> None:
        self.invalid = 0
        self.dropped: list[str] = []

    def message_invalid(self, channel: str, platform: str) -> None:
        self.invalid += 1

    def frame_dropped(self, channel: str, platform: str, reason: str = "unreadable") -> None:
        self.dropped.append(reason)


class ToyProvider(SessionProvider[ToyConfig, ToyApi, ToySession]):
    platform = "toy"
    session_name = "toy session"
    close_budget = 0.3

    def __init__(
        self, config: ToyConfig, sink: Callable[[InboundMessage], Awaitable[None]]
    ) -> None:
        self.counts = Counts()
        super().__init__(config, sink, observer=self.counts)
        self.sessions: list[ToySession] = []
        self.remembered: list[ToySession] = []
        self.open_error: BaseException | None = None
        self.create_error: BaseException | None = None
        self.hang_on_close = False

    def _new_api(self) -> ToyApi:
        return ToyApi()

    def _new_sender(self, api: ToyApi) -> MessageSender:
        return ToySender()

    async def _new_session(self) -> ToySession:
        session = ToySession(
            self._config.url,
            self._on_frame,
            self._count_drop,
            open_error=self.open_error,
            hang_on_close=self.hang_on_close,
        )
        self.sessions.append(session)
        return session

    def _remember(self, session: ToySession) -> None:
        self.remembered.append(session)

    def _new_reply(self, message: InboundMessage) -> CardReplyStream:
        return ToyReply(self._sender, message, self.create_error)

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        await self._deliver(lambda: self._convert(frame), "toy message")

    def _convert(self, frame: dict[str, Any]) -> InboundMessage:
        if not isinstance(frame.get("text"), str):
            raise PermanentError("toy message without a text")
        return InboundMessage(
            channel_id=self.channel_id,
            platform=self.platform,
            message_id=str(frame.get("id", "")),
            chat_id="chat",
            chat_type=ChatType.DIRECT,
            sender=Sender("user"),
            text=frame["text"],
            received_at=datetime.now(UTC),
        )


class Toy:
    """A provider on a live gateway, and what its sink received."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.received: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self.provider = ToyProvider(ToyConfig(id="toy-1", url=gateway.url), self.received.put)

    async def server_side(self) -> ServerConnection:
        return await asyncio.wait_for(self.gateway.accepted.get(), 5)


@pytest.fixture
async def toy(gateway: Gateway) -> AsyncIterator[Toy]:
    toy = Toy(gateway)
    try:
        yield toy
    finally:
        await toy.provider.close()


def test_the_toy_provider_satisfies_the_channel_provider_contract(toy: Toy) -> None:
    provider: ChannelProvider = toy.provider  # mypy checks the structural match
    assert provider.state is ChannelState.DISCONNECTED
    assert provider.last_frame_at == 0.0


async def test_start_returns_connected_and_messages_reach_the_sink(toy: Toy) -> None:
    await toy.provider.start()
    assert toy.provider.state is ChannelState.CONNECTED
    assert toy.provider.remembered == toy.provider.sessions  # what the open session learned
    server = await toy.server_side()
    await server.send(json.dumps({"id": "m1", "text": "hi"}))
    message = await asyncio.wait_for(toy.received.get(), 5)
    assert (message.message_id, message.text, message.platform) == ("m1", "hi", "toy")
    assert toy.provider.last_frame_at > 0


async def test_unreadable_frames_and_messages_are_counted_not_delivered(toy: Toy) -> None:
    await toy.provider.start()
    server = await toy.server_side()
    await server.send("not json")
    await server.send(json.dumps({"id": "m0"}))  # converts to nothing: PermanentError
    await server.send(json.dumps({"id": "m1", "text": "after"}))
    message = await asyncio.wait_for(toy.received.get(), 5)
    assert message.text == "after"
    assert toy.received.empty()
    assert toy.provider.counts.dropped == ["unreadable"]
    assert toy.provider.counts.invalid == 1


async def test_drops_are_reported_from_every_session(toy: Toy) -> None:
    for _ in range(2):
        await toy.provider.start()  # a second start replaces the first session
        server = await toy.server_side()
        await server.send("junk")
        await server.send(json.dumps({"id": "x", "text": "sync"}))
        await asyncio.wait_for(toy.received.get(), 5)
    assert toy.provider.counts.dropped == ["unreadable", "unreadable"]
    assert toy.provider.sessions[0].closes == 1


async def test_wait_closed_returns_when_the_platform_ends_the_session(toy: Toy) -> None:
    await toy.provider.start()
    server = await toy.server_side()
    await server.send("bye")
    await asyncio.wait_for(toy.provider.wait_closed(), 5)
    assert toy.provider.state is ChannelState.DISCONNECTED
    assert toy.provider.remembered == [toy.provider.sessions[0]] * 2  # once open, once ended


async def test_wait_closed_raises_why_the_session_ended(toy: Toy) -> None:
    await toy.provider.start()
    server = await toy.server_side()
    await server.close(code=1011)
    with pytest.raises(TransientError, match=r"toy gateway closed the socket \(code 1011\)"):
        await asyncio.wait_for(toy.provider.wait_closed(), 5)
    assert toy.provider.state is ChannelState.DISCONNECTED


async def test_a_reader_cancelled_by_someone_else_is_a_transient_end(toy: Toy) -> None:
    await toy.provider.start()
    waiter = asyncio.create_task(toy.provider.wait_closed())
    await asyncio.sleep(0)
    reader = toy.provider._reader
    assert reader is not None
    reader.cancel()
    with pytest.raises(TransientError, match="toy session was cancelled"):
        await asyncio.wait_for(waiter, 5)


async def test_cancelling_wait_closed_itself_propagates(toy: Toy) -> None:
    await toy.provider.start()
    waiter = asyncio.create_task(toy.provider.wait_closed())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    reader = toy.provider._reader
    assert reader is not None and not reader.done()  # the session lives on


async def test_a_failed_open_leaves_nothing_behind(toy: Toy) -> None:
    toy.provider.open_error = AuthError("bad credentials")
    with pytest.raises(AuthError):
        await toy.provider.start()
    assert toy.provider.state is ChannelState.DISCONNECTED
    assert toy.provider.sessions[0].closes == 1
    assert toy.provider._reader is None
    with pytest.raises(TransientError, match="no session"):
        await toy.provider.wait_closed()


async def test_a_refused_handshake_is_the_platforms_classified_error(toy: Toy) -> None:
    toy.gateway.refuse_with = 401
    with pytest.raises(AuthError, match="HTTP 401"):
        await toy.provider.start()
    assert toy.provider.state is ChannelState.DISCONNECTED


async def test_close_is_idempotent_and_bounded(toy: Toy) -> None:
    toy.provider.hang_on_close = True
    await toy.provider.start()
    session = toy.provider.sessions[0]
    loop = asyncio.get_running_loop()
    began = loop.time()
    await toy.provider.close()
    assert loop.time() - began < 2.0  # the budget is 0.3 s; the hung close was given up
    await toy.provider.close()
    assert toy.provider.state is ChannelState.DISCONNECTED
    assert toy.provider._api.closed == 2
    with pytest.raises(PermanentError, match="closed"):
        await toy.provider.start()
    await session.socket.close()  # what the hung close() never got to


async def test_send_splits_at_the_senders_limit_and_names_each_part(toy: Toy) -> None:
    message = toy.provider._convert({"id": "m1", "text": "q"})
    await toy.provider.send(message, "first part\n\nsecond part")
    sender = toy.provider._sender
    assert isinstance(sender, ToySender)
    assert sender.sent == [("send-0", "first part"), ("send-1", "second part")]


async def test_open_stream_begins_a_card_and_resume_stream_adopts_one(toy: Toy) -> None:
    message = toy.provider._convert({"id": "m1", "text": "q"})
    opened = await toy.provider.open_stream(message)
    assert opened.delivered.card_id == "card-1"
    resumed = await toy.provider.resume_stream(message, "card-9", "shown so far")
    assert (resumed.delivered.card_id, resumed.delivered.text) == ("card-9", "shown so far")


async def test_a_reply_under_way_keeps_the_http_client_open_until_it_ends(toy: Toy) -> None:
    await toy.provider.start()
    message = toy.provider._convert({"id": "m1", "text": "q"})
    first = await toy.provider.open_stream(message)
    second = await toy.provider.resume_stream(message, "card-9", "shown")
    await toy.provider.close()
    assert toy.provider.sessions[0].closes == 1  # the socket at once
    assert toy.provider.state is ChannelState.DISCONNECTED
    assert toy.provider._api.closed == 0  # the client waits for the replies
    await first.update("an answer")
    await first.finish("an answer in full")
    assert toy.provider._api.closed == 0
    await second.fail("(stopped)", partial_text="shown")
    assert toy.provider._api.closed == 1  # after the last one
    await second.fail("(stopped)")  # a reply ends once: nothing closes twice
    assert toy.provider._api.closed == 1
    assert first.delivered.text == "an answer in full"


async def test_a_send_under_way_keeps_the_http_client_open_until_it_returns(toy: Toy) -> None:
    message = toy.provider._convert({"id": "m1", "text": "q"})
    sender = toy.provider._sender
    assert isinstance(sender, ToySender)
    gate = asyncio.Event()
    real_send = sender.send

    async def slow_send(message: InboundMessage, text: str, purpose: str) -> None:
        await gate.wait()
        await real_send(message, text, purpose)

    sender.send = slow_send  # type: ignore[method-assign]  # a leaf held back by the test
    sending = asyncio.create_task(toy.provider.send(message, "hello"))
    await asyncio.sleep(0)
    await toy.provider.close()
    assert toy.provider._api.closed == 0
    gate.set()
    await sending
    assert sender.sent == [("send-0", "hello")]
    assert toy.provider._api.closed == 1


async def test_a_reply_that_never_began_holds_nothing(toy: Toy) -> None:
    message = toy.provider._convert({"id": "m1", "text": "q"})
    toy.provider.create_error = asyncio.CancelledError()  # e.g. a shutdown while creating it
    with pytest.raises(asyncio.CancelledError):
        await toy.provider.open_stream(message)
    await toy.provider.close()
    assert toy.provider._api.closed == 1


async def test_a_message_on_its_way_in_when_the_session_closes_is_not_cut_off(
    gateway: Gateway,
) -> None:
    """The sink journals, then queues: a close in between must not lose the message."""
    journaled: list[str] = []
    queued: list[str] = []
    gate = asyncio.Event()

    on_its_way = asyncio.Event()

    async def sink(message: InboundMessage) -> None:
        journaled.append(message.message_id)
        on_its_way.set()
        await gate.wait()  # e.g. the journal's commit
        queued.append(message.message_id)

    provider = ToyProvider(ToyConfig(id="toy-1", url=gateway.url), sink)
    try:
        await provider.start()
        server = await asyncio.wait_for(gateway.accepted.get(), 5)
        await server.send(json.dumps({"id": "m1", "text": "hi"}))
        await asyncio.wait_for(on_its_way.wait(), 5)
        closing = asyncio.create_task(provider.close())
        async with asyncio.timeout(5):
            while provider._reader is not None:  # close() has begun cancelling the reader
                await asyncio.sleep(0.005)
        gate.set()
        await closing
        assert provider.sessions[0].closes == 1
        assert queued == ["m1"]
    finally:
        await provider.close()
