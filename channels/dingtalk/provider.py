"""The DingTalk channel provider: Stream session, inbound conversion, card and message replies."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.dingtalk.api import DingTalkApi
from channels.dingtalk.cards import MARKDOWN_LIMIT, DingTalkReplyStream, MessageSender
from channels.dingtalk.config import DingTalkChannelConfig
from channels.dingtalk.connection import DingTalkSession
from channels.dingtalk.convert import PLATFORM, to_inbound
from channels.model import ChannelId, ChannelState, InboundMessage
from channels.observer import NullObserver, Observer
from channels.provider import Capabilities, InboundSink, ReplyStream
from channels.sessions import cancel_reader, watch_reader
from channels.splitting import split_text
from common.errors import PermanentError

CLOSE_BUDGET = 3.0  # seconds close() may take, socket and reader included


class DingTalkProvider:
    """One DingTalk robot. Sessions come and go under the supervisor; replies survive them."""

    platform = PLATFORM
    capabilities = Capabilities(
        streaming_card=True, markdown=True, max_message_chars=MARKDOWN_LIMIT
    )

    def __init__(
        self,
        config: DingTalkChannelConfig,
        sink: InboundSink,
        *,
        observer: Observer | None = None,
    ) -> None:
        self._config = config
        self._observer = observer or NullObserver()
        self._sink = sink
        self._log = logging.getLogger(f"channeld.dingtalk.{config.id}")
        self._api = DingTalkApi(
            client_id=config.client_id,
            client_secret=config.client_secret.get_secret_value(),
            api_base=config.api_base,
            robot_code=config.effective_robot_code,
            timeout=config.request_timeout,
            on_request=self._count_request,
        )
        self._sender = MessageSender(self._api)
        self._session: DingTalkSession | None = None
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
        """Open a Stream session; returns once the websocket handshake succeeded."""
        if self._closed:
            raise PermanentError("provider is closed")
        await self._end_session()
        self._state = ChannelState.CONNECTING
        session = DingTalkSession(
            client_id=self._config.client_id,
            client_secret=self._config.client_secret.get_secret_value(),
            api=self._api,
            on_message=self._on_bot_message,
            watchdog_seconds=self._config.watchdog_seconds,
            logger=self._log,
            on_ack=self._count_ack,
            on_drop=self._count_drop,
        )
        try:
            await session.open()
        except BaseException:
            self._state = ChannelState.DISCONNECTED
            await session.close()
            raise
        self._session = session
        self._reader = asyncio.create_task(session.run(), name=f"dingtalk-reader-{self._config.id}")
        self._state = ChannelState.CONNECTED

    async def wait_closed(self) -> None:
        """Return when the gateway ended the session normally; raise why otherwise."""
        reader = self._reader
        try:
            await watch_reader(reader, "stream session")
        finally:
            if reader is not None and reader.done():
                self._state = ChannelState.DISCONNECTED

    async def close(self) -> None:
        """Idempotent and bounded: ends the session and closes the HTTP client."""
        self._closed = True
        try:
            async with asyncio.timeout(CLOSE_BUDGET):
                await self._end_session()
        except TimeoutError:
            self._log.warning("closing the stream session took longer than %.0fs", CLOSE_BUDGET)
        await self._api.close()
        self._state = ChannelState.DISCONNECTED

    async def _end_session(self) -> None:
        reader, session = self._reader, self._session
        self._reader, self._session = None, None
        await cancel_reader(reader)
        if session is not None:
            self._frames_dropped_before += session.invalid_frames
            await session.close()

    async def _on_bot_message(self, frame_id: str, payload: dict[str, Any]) -> None:
        try:
            message = to_inbound(self.channel_id, payload, frame_id)
        except PermanentError as exc:
            # acked anyway: a malformed message would only come back again
            self._log.warning("ignored an unreadable bot message: %s", exc)
            self._observer.message_invalid(self._config.id, PLATFORM)
            return
        await self._sink(message)

    def _count_request(self, endpoint: str, status: str) -> None:
        self._observer.platform_request(self._config.id, PLATFORM, endpoint, status)

    def _count_drop(self, reason: str) -> None:
        self._observer.frame_dropped(self._config.id, PLATFORM, reason)

    def _count_ack(self, seconds: float) -> None:
        self._observer.ack_latency(self._config.id, PLATFORM, seconds)

    async def send(self, message: InboundMessage, text: str) -> None:
        for chunk in split_text(text, MARKDOWN_LIMIT):
            await self._sender.send(message, chunk)

    async def open_stream(self, message: InboundMessage) -> ReplyStream:
        stream = DingTalkReplyStream(
            self._api,
            self._sender,
            message,
            template_id=self._config.card_template_id,
            content_key=self._config.card_content_key,
        )
        await stream.begin()
        return stream

    async def resume_stream(self, message: InboundMessage, card_id: str, shown: str) -> ReplyStream:
        stream = DingTalkReplyStream(
            self._api,
            self._sender,
            message,
            template_id=self._config.card_template_id,
            content_key=self._config.card_content_key,
        )
        stream.adopt(card_id, shown)
        return stream
