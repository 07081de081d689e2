"""The lifecycle every session provider shares; a platform adds its session and its replies.

A provider holds one platform session (its `connection.py`) at a time. `start()` builds and opens
one and returns once the platform's handshake succeeded (or raises a classified error), a reader
task runs it, `wait_closed()` returns or raises as that task ended, and `close()` ends it within
a budget. Messages reach the daemon only through the sink: providers never touch storage or agents.

The HTTP client outlives the session: every reply stream (from its opening until it ends) and every
`send()` holds it, and `close()` closes it only once the last holder let go, so an answer streaming
when its channel stops still ends properly (the channel manager bounds how long it may take).

`CallbackSessionProvider` is the webhook platforms' kind: a `CallbackSession` in place of a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from channels.callbacks import BatchSink, CallbackSession, Intake, SeenProofs
from channels.cards import CardReplyStream, MessageSender
from channels.config import ChannelConfigBase
from channels.connection import SessionSocket
from channels.http import HttpOptions
from channels.model import ChannelId, ChannelState, Delivered, InboundMessage, SenderProfile
from channels.observer import NullObserver, Observer
from channels.provider import InboundSink, ReplyStream
from channels.splitting import split_text
from common.errors import PermanentError, TransientError

# seconds a webhook platform's checked proofs are remembered: beyond its time window (600 s)
# plus its retries (ZIM's last comes 62 s after the first)
PROOF_MEMORY = 1800.0


class PlatformSession(Protocol):
    """One connection to the platform, as a provider drives it."""

    @property
    def socket(self) -> SessionSocket:
        """Its websocket, with the time of its last frame."""
        ...

    async def open(self) -> None:
        """Return once the platform's handshake succeeded, or raise a classified error."""
        ...

    async def run(self) -> None:
        """Read until the session ends: return when the platform ended it, else raise why."""
        ...

    async def close(self) -> None:
        """Close the socket, bounded."""
        ...


class PlatformClient(Protocol):
    """The platform's HTTP client, as far as the provider's lifecycle is concerned."""

    async def close(self) -> None:
        """Close its HTTP session."""
        ...


ConfigT = TypeVar("ConfigT", bound=ChannelConfigBase)
ApiT = TypeVar("ApiT", bound=PlatformClient)
SessionT = TypeVar("SessionT", bound=PlatformSession)


class SessionProvider(ABC, Generic[ConfigT, ApiT, SessionT]):
    """A `ChannelProvider` over one platform session at a time; sessions come and go under the
    supervisor, replies survive them."""

    platform: ClassVar[str]
    session_name: ClassVar[str] = "session"  # what the platform's session is called, for errors
    close_budget: ClassVar[float] = 3.0  # seconds close() may take, socket and reader included

    def __init__(
        self, config: ConfigT, sink: InboundSink, *, observer: Observer | None = None
    ) -> None:
        self._config = config
        self._sink = sink
        self._observer = observer or NullObserver()
        self._log = logging.getLogger(f"channeld.{self.platform}.{config.id}")
        self._api = self._new_api()
        self._sender = self._new_sender(self._api)
        self._session: SessionT | None = None
        self._reader: asyncio.Task[None] | None = None
        self._state = ChannelState.DISCONNECTED
        self._closed = False
        self._holds = 0  # replies open and sends under way: the HTTP client stays open for them
        # messages on their way into the sink (or a callback's `deliver`)
        self._deliveries: set[asyncio.Future[Any]] = set()

    # -- what a platform provides ------------------------------------------------------------------

    @abstractmethod
    def _new_api(self) -> ApiT:
        """The platform's HTTP client, built with `_http_options`."""

    @abstractmethod
    def _new_sender(self, api: ApiT) -> MessageSender:
        """What sends plain messages through `api`."""

    @abstractmethod
    async def _new_session(self) -> SessionT:
        """A session ready to open; anything to check or learn first happens here."""

    def _remember(self, session: SessionT) -> None:
        """Keep what a session learned (once open, and once ended) for the next one."""

    @abstractmethod
    def _new_reply(self, message: InboundMessage) -> CardReplyStream:
        """A reply to `message`, not yet begun."""

    # -- ChannelProvider ---------------------------------------------------------------------------

    @property
    def channel_id(self) -> ChannelId:
        return ChannelId(self._config.id)

    @property
    def state(self) -> ChannelState:
        return self._state

    @property
    def last_frame_at(self) -> float:
        return self._session.socket.last_frame_at if self._session else 0.0

    async def start(self) -> None:
        """Open a session; returns once the platform's handshake succeeded."""
        if self._closed:
            raise PermanentError("provider is closed")
        await self._end_session()
        self._state = ChannelState.CONNECTING
        session: SessionT | None = None
        try:
            session = await self._new_session()
            await session.open()
        except BaseException:
            self._state = ChannelState.DISCONNECTED
            if session is not None:
                await session.close()
            raise
        self._session = session
        self._remember(session)
        name = f"{self.platform}-reader-{self._config.id}"
        self._reader = asyncio.create_task(session.run(), name=name)
        self._state = ChannelState.CONNECTED

    async def wait_closed(self) -> None:
        """Return when the platform ended the session normally; raise why otherwise."""
        reader, session = self._reader, self._session
        try:
            await _watch(reader, self.session_name)
        finally:
            if reader is not None and reader.done():
                self._state = ChannelState.DISCONNECTED
                if session is not None:
                    self._remember(session)

    async def close(self) -> None:
        """Idempotent and bounded: ends the session at once; closes the HTTP client now, or when
        the last reply stream or send still holding it ends."""
        self._closed = True
        try:
            async with asyncio.timeout(self.close_budget):
                await self._end_session()
        except TimeoutError:
            self._log.warning(
                "closing the %s took longer than %.0fs", self.session_name, self.close_budget
            )
        if self._holds == 0:
            await self._api.close()
        else:
            self._log.info(
                "%d replies still under way; the HTTP client closes after them", self._holds
            )
        self._state = ChannelState.DISCONNECTED

    async def send(self, message: InboundMessage, text: str) -> None:
        chunks = split_text(text, self._sender.limit, measure=self._sender.measure)
        async with self._holding():
            for index, chunk in enumerate(chunks):
                await self._sender.send(message, chunk, f"send-{index}")

    async def open_stream(self, message: InboundMessage) -> ReplyStream:
        reply = self._new_reply(message)
        self._hold()
        try:
            await reply.begin()
        except BaseException:
            await self._release()
            raise
        return _HeldReply(reply, self._release)

    async def resume_stream(self, message: InboundMessage, card_id: str, shown: str) -> ReplyStream:
        reply = self._new_reply(message)
        reply.adopt(card_id, shown)
        self._hold()
        return _HeldReply(reply, self._release)

    async def sender_profile(self, message: InboundMessage) -> SenderProfile:
        """Nothing asked: a platform with a user-info API overrides this; webhook platforms pass
        what their callbacks carry in the message itself."""
        return SenderProfile()

    # -- for subclasses ----------------------------------------------------------------------------

    async def _deliver(self, convert: Callable[[], InboundMessage], what: str) -> None:
        """Hand `convert()` to the sink; when it raises PermanentError, count and skip it."""
        try:
            message = convert()
        except PermanentError as exc:
            # acked anyway: a malformed message would only come back again
            self._log.warning("ignored an unreadable %s: %s", what, exc)
            self._observer.message_invalid(self._config.id, self.platform)
            return
        # Its own task, which a closing session waits for instead of cancelling: cut between
        # the journal write and the job it makes, the message would wait for the next start
        # (unacked, the platform delivers it again, and the journal calls that a duplicate).
        delivery: asyncio.Future[None] = asyncio.ensure_future(self._sink(message))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)
        await asyncio.shield(delivery)

    def _http_options(self, timeout: float) -> HttpOptions:
        """What the platform's HTTP client takes from the provider: `timeout`, request counting."""
        return HttpOptions(timeout=timeout, on_request=self._count_request)

    def _count_request(self, endpoint: str, status: str) -> None:
        self._observer.platform_request(self._config.id, self.platform, endpoint, status)

    def _count_drop(self, reason: str) -> None:
        self._observer.frame_dropped(self._config.id, self.platform, reason)

    def _count_ack(self, seconds: float) -> None:
        self._observer.ack_latency(self._config.id, self.platform, seconds)

    def _hold(self) -> None:
        self._holds += 1

    async def _release(self) -> None:
        self._holds -= 1
        if self._closed and self._holds == 0:
            await self._api.close()  # the channel stopped while this was under way

    @contextlib.asynccontextmanager
    async def _holding(self) -> AsyncIterator[None]:
        self._hold()
        try:
            yield
        finally:
            await self._release()

    async def _end_session(self) -> None:
        reader, session = self._reader, self._session
        self._reader, self._session = None, None
        await _cancel(reader)
        if session is not None:
            await session.close()
        if self._deliveries:
            await asyncio.wait(set(self._deliveries))  # journaled and queued, or refused


class CallbackSessionProvider(SessionProvider[ConfigT, ApiT, CallbackSession]):
    """A webhook platform's provider: its session is a `CallbackSession` opened by one checked
    API call, and its messages come to `handle_callback` from the callback listener."""

    session_name: ClassVar[str] = "callback session"

    def __init__(
        self,
        config: ConfigT,
        sink: InboundSink,
        *,
        observer: Observer | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, sink, observer=observer)
        self._wall_clock = wall_clock  # what callbacks' timestamps are checked against
        # longer than any platform's time window plus its retries
        self._proofs = SeenProofs(keep=PROOF_MEMORY)

    @abstractmethod
    async def _check_app(self) -> None:
        """One authenticated API call proving the credentials; raises a classified error."""

    async def _new_session(self) -> CallbackSession:
        return CallbackSession(self._check_app, self._log)

    def _in_time_or_retried(self, proof: str, body: bytes, check_time: Callable[[], None]) -> None:
        """After its signature checked out: a callback seen before with the same proof and body
        (the platform's retry) passes whatever its age; another body under a proof seen before
        is refused; a new one must pass `check_time` (which raises CallbackRejected)."""
        if self._proofs.retried(proof, body):
            return
        check_time()
        self._proofs.remember(proof, body)

    def _touch(self) -> None:
        """A callback passed the platform's check: the session's sign of life."""
        if self._session is not None:
            self._session.touch()

    def _ignore_unreadable(self, what: str, count: int = 1) -> None:
        """Messages acknowledged although unreadable: the platform would only send them again."""
        self._log.warning("ignored %s", what)
        for _ in range(count):
            self._observer.message_invalid(self._config.id, self.platform)

    async def _deliver_batch(
        self, deliver: BatchSink, messages: Sequence[InboundMessage]
    ) -> Intake:
        """A callback's `deliver(messages)`, in a task of its own that a closing session waits
        for and a cancelled request does not cut short (journaled but never queued, the messages
        would wait for the next start: their redelivery counts as a duplicate)."""
        delivery: asyncio.Future[Intake] = asyncio.ensure_future(deliver(messages))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)
        return await asyncio.shield(delivery)


class _HeldReply:
    """A reply stream that holds its provider's HTTP client open until it has ended: its final
    text landed, or it failed (the emitter ends every reply one way or the other)."""

    def __init__(self, reply: CardReplyStream, release: Callable[[], Awaitable[None]]) -> None:
        self._reply = reply
        self._release: Callable[[], Awaitable[None]] | None = release

    @property
    def delivered(self) -> Delivered:
        return self._reply.delivered

    async def update(self, text_so_far: str) -> None:
        await self._reply.update(text_so_far)

    async def finish(self, final_text: str) -> None:
        # not released when it raises: the emitter retries, or ends the reply with fail()
        await self._reply.finish(final_text)
        await self._end()

    async def fail(self, reason: str, partial_text: str = "") -> None:
        try:
            await self._reply.fail(reason, partial_text)
        finally:
            await self._end()  # the last call anyone makes on a reply, whatever it did

    async def _end(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            await release()


async def _watch(reader: asyncio.Task[None] | None, what: str) -> None:
    """Wait for a session's reader: return or raise as it did; its cancellation by someone
    else (the provider closing the session) is a TransientError, ours propagates."""
    if reader is None:
        raise TransientError("no session")
    try:
        await asyncio.shield(reader)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if reader.cancelled() and not (task and task.cancelling()):
            raise TransientError(f"{what} was cancelled") from None
        raise


async def _cancel(reader: asyncio.Task[None] | None) -> None:
    """Cancel a reader and wait for it; whatever it raised is already reported elsewhere."""
    if reader is not None:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
