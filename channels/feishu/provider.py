"""The Feishu/Lark channel provider: long connection, event conversion, CardKit replies, the
sender's profile."""

from __future__ import annotations

from typing import Any

from channels.cards import CardReplyStream, MessageSender
from channels.feishu.api import FeishuApi
from channels.feishu.cards import FeishuMessageSender, FeishuReplyStream
from channels.feishu.config import FeishuChannelConfig
from channels.feishu.connection import LongConnection
from channels.feishu.convert import MESSAGE_RECEIVED, PLATFORM, event_type, to_inbound
from channels.feishu.frames import ClientConfig
from channels.model import InboundMessage, SenderProfile
from channels.observer import Observer
from channels.provider import InboundSink
from channels.sessions import SessionProvider
from common.errors import ChannelError


class FeishuProvider(SessionProvider[FeishuChannelConfig, FeishuApi, LongConnection]):
    """One Feishu/Lark app over the event long connection."""

    platform = PLATFORM
    session_name = "long connection"

    def __init__(
        self, config: FeishuChannelConfig, sink: InboundSink, *, observer: Observer | None = None
    ) -> None:
        super().__init__(config, sink, observer=observer)
        self._client_config: ClientConfig | None = None  # the gateway's, once it sent one
        self._bot_open_id = ""

    def _new_api(self) -> FeishuApi:
        return FeishuApi(
            app_id=self._config.app_id,
            app_secret=self._config.app_secret.get_secret_value(),
            base_url=self._config.base_url,
            **self._http_options(self._config.request_timeout),
        )

    def _new_sender(self, api: FeishuApi) -> MessageSender:
        return FeishuMessageSender(api)

    async def _new_session(self) -> LongConnection:
        # the token proves the credentials before the gateway is asked, and names the bot
        await self._api.tenant_token()
        if not self._bot_open_id:
            await self._learn_bot_identity()
        return LongConnection(
            self._api,
            on_event=self._on_event,
            logger=self._log,
            config=self._client_config,
            watchdog_seconds=self._config.watchdog_seconds,
            on_ack=self._count_ack,
            on_invalid=self._count_drop,
        )

    def _remember(self, session: LongConnection) -> None:
        # the gateway's ping and reconnect settings outlive the session that received them
        self._client_config = session.client_config

    def _new_reply(self, message: InboundMessage) -> CardReplyStream:
        return FeishuReplyStream(self._api, self._sender, message)

    async def sender_profile(self, message: InboundMessage) -> SenderProfile:
        """The sender's e-mail, mobile and employee number from the contacts API, by open_id."""
        async with self._holding():  # a channel stopping meanwhile closes the client after it
            return await self._api.user_profile(message.sender.platform_id)

    async def _learn_bot_identity(self) -> None:
        try:
            self._bot_open_id = await self._api.bot_open_id()
        except ChannelError as exc:
            self._log.warning(
                "bot info unavailable (%s); in groups any @mention will count as one to the bot",
                exc,
            )

    async def _on_event(self, event: dict[str, Any]) -> None:
        if event_type(event) != MESSAGE_RECEIVED:
            self._log.debug("ignored a %r event", event_type(event)[:60])
            return
        await self._deliver(
            lambda: to_inbound(self.channel_id, event, self._bot_open_id), "message event"
        )
