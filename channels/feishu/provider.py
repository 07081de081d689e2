"""The Feishu/Lark channel provider: long connection, event conversion, CardKit replies."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.feishu.api import FeishuApi
from channels.feishu.cards import POST_TEXT_BYTES, FeishuReplyStream, MessageSender, utf8_len
from channels.feishu.config import FeishuChannelConfig
from channels.feishu.connection import LongConnection
from channels.feishu.convert import MESSAGE_RECEIVED, PLATFORM, event_type, to_inbound
from channels.feishu.frames import ClientConfig
from channels.model import ChannelId, ChannelState, InboundMessage
from channels.observer import NullObserver, Observer
from channels.provider import Capabilities, InboundSink, ReplyStream
from channels.sessions import cancel_reader, watch_reader
from channels.splitting import split_text
from common.errors import ChannelError, PermanentError

CLOSE_BUDGET = 3.0  # seconds close() may take, socket and reader included


class FeishuProvider:
    """One Feishu/Lark app. Sessions come and go under the supervisor; replies survive them."""

    platform = PLATFORM
    capabilities = Capabilities(streaming_card=True, markdown=True, max_message_chars=10_000)

    def __init__(
        self,
        config: FeishuChannelConfig,
        sink: InboundSink,
        *,
        observer: Observer | None = None,
    ) -> None:
        self._config = config
        self._sink = sink
        self._observer = observer or NullObserver()
        self._log = logging.getLogger(f"channeld.feishu.{config.id}")
        self._api = FeishuApi(
            app_id=config.app_id,
            app_secret=config.app_secret.get_secret_value(),
            base_url=config.base_url,
            timeout=config.request_timeout,
            on_request=self._count_request,
        )
        self._sender = MessageSender(self._api)
        self._client_config: ClientConfig | None = None  # the gateway's, once it sent one
        self._bot_open_id = ""
        self._session: LongConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._state = ChannelState.DISCONNECTED
        self._closed = False
        self._frames_dropped_before = 0  # by sessions that have ended

    @property
    def channel_id(self) -> ChannelId:
        return ChannelId(self._config.id)

    @property
    def state(self) -> ChannelState:
        return self._state

    @property
    def last_frame_at(self) -> float:
        return self._session.last_frame_at if self._session else 0.0

    @property
    def frames_dropped(self) -> int:
        """Gateway frames dropped as unreadable, over every session of this provider."""
        current = self._session.invalid_frames if self._session else 0
        return self._frames_dropped_before + current

    async def start(self) -> None:
        """Discover the gateway and open the socket; returns once the handshake succeeded."""
        if self._closed:
            raise PermanentError("provider is closed")
        await self._end_session()
        self._state = ChannelState.CONNECTING
        # the token proves the credentials before the gateway is asked, and names the bot
        await self._api.tenant_token()
        if not self._bot_open_id:
            await self._learn_bot_identity()
        session = LongConnection(
            self._api,
            on_event=self._on_event,
            logger=self._log,
            config=self._client_config,
            watchdog_seconds=self._config.watchdog_seconds,
            on_ack=self._count_ack,
            on_invalid=self._count_invalid,
        )
        try:
            await session.open()
        except BaseException:
            self._state = ChannelState.DISCONNECTED
            await session.close()
            raise
        self._client_config = session.client_config
        self._session = session
        self._reader = asyncio.create_task(session.run(), name=f"feishu-reader-{self._config.id}")
        self._state = ChannelState.CONNECTED

    async def _learn_bot_identity(self) -> None:
        try:
            self._bot_open_id = await self._api.bot_open_id()
        except ChannelError as exc:
            self._log.warning(
                "bot info unavailable (%s); in groups any @mention will count as one to the bot",
                exc,
            )

    async def wait_closed(self) -> None:
        """Raise why the session ended (it always ends with a reason on Feishu)."""
        reader = self._reader
        try:
            await watch_reader(reader, "long connection")
        finally:
            if reader is not None and reader.done():
                self._state = ChannelState.DISCONNECTED
                if self._session is not None:
                    self._client_config = self._session.client_config

    async def close(self) -> None:
        """Idempotent and bounded: ends the session and closes the HTTP client."""
        self._closed = True
        try:
            async with asyncio.timeout(CLOSE_BUDGET):
                await self._end_session()
        except TimeoutError:
            self._log.warning("closing the long connection took longer than %.0fs", CLOSE_BUDGET)
        await self._api.close()
        self._state = ChannelState.DISCONNECTED

    async def _end_session(self) -> None:
        reader, session = self._reader, self._session
        self._reader, self._session = None, None
        await cancel_reader(reader)
        if session is not None:
            self._frames_dropped_before += session.invalid_frames
            await session.close()

    async def _on_event(self, event: dict[str, Any]) -> None:
        if event_type(event) != MESSAGE_RECEIVED:
            self._log.debug("ignored a %r event", event_type(event)[:60])
            return
        try:
            message = to_inbound(self.channel_id, event, self._bot_open_id)
        except PermanentError as exc:
            # acked anyway: a malformed event would only come back again
            self._log.warning("ignored an unreadable message event: %s", exc)
            self._observer.message_invalid(self._config.id, PLATFORM)
            return
        await self._sink(message)

    def _count_request(self, endpoint: str, status: str) -> None:
        self._observer.platform_request(self._config.id, PLATFORM, endpoint, status)

    def _count_ack(self, seconds: float) -> None:
        self._observer.ack_latency(self._config.id, PLATFORM, seconds)

    def _count_invalid(self, reason: str) -> None:
        self._observer.frame_dropped(self._config.id, PLATFORM, reason)

    async def send(self, message: InboundMessage, text: str) -> None:
        for index, chunk in enumerate(split_text(text, POST_TEXT_BYTES, measure=utf8_len)):
            await self._sender.send(message, chunk, f"send-{index}")

    async def open_stream(self, message: InboundMessage) -> ReplyStream:
        stream = FeishuReplyStream(self._api, self._sender, message)
        await stream.begin()
        return stream

    async def resume_stream(self, message: InboundMessage, card_id: str, shown: str) -> ReplyStream:
        stream = FeishuReplyStream(self._api, self._sender, message)
        stream.adopt(card_id, shown)
        return stream
