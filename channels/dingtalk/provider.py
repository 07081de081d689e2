"""The DingTalk provider: Stream-mode session, inbound conversion, card and message replies."""

from __future__ import annotations

from typing import Any

from channels.cards import CardReplyStream, MessageSender
from channels.dingtalk.api import DingTalkApi
from channels.dingtalk.cards import DingTalkMessageSender, DingTalkReplyStream
from channels.dingtalk.config import DingTalkChannelConfig
from channels.dingtalk.connection import DingTalkSession
from channels.dingtalk.convert import PLATFORM, to_inbound
from channels.model import InboundMessage, SenderProfile
from channels.sessions import SessionProvider


class DingTalkProvider(SessionProvider[DingTalkChannelConfig, DingTalkApi, DingTalkSession]):
    """One DingTalk robot over Stream mode."""

    platform = PLATFORM
    session_name = "Stream-mode session"

    def _new_api(self) -> DingTalkApi:
        return DingTalkApi(
            client_id=self._config.client_id,
            client_secret=self._config.client_secret.get_secret_value(),
            api_base=self._config.api_base,
            robot_code=self._config.effective_robot_code,
            oapi_base=self._config.oapi_base,
            **self._http_options(self._config.request_timeout),
        )

    def _new_sender(self, api: DingTalkApi) -> MessageSender:
        return DingTalkMessageSender(api)

    async def _new_session(self) -> DingTalkSession:
        return DingTalkSession(
            client_id=self._config.client_id,
            client_secret=self._config.client_secret.get_secret_value(),
            api=self._api,
            on_message=self._on_bot_message,
            watchdog_seconds=self._config.watchdog_seconds,
            logger=self._log,
            on_ack=self._count_ack,
            on_drop=self._count_drop,
        )

    def _new_reply(self, message: InboundMessage) -> CardReplyStream:
        return DingTalkReplyStream(
            self._api,
            self._sender,
            message,
            template_id=self._config.card_template_id,
            content_key=self._config.card_content_key,
        )

    async def sender_profile(self, message: InboundMessage) -> SenderProfile:
        """The sender's e-mail, mobile and job number from the contacts API, by staff id; nothing
        is asked for a sender without one (someone outside the organisation)."""
        staff_id = message.sender.extra_ids.get("staff_id", "")
        if not staff_id:
            return SenderProfile()
        async with self._holding():
            return await self._api.user_profile(staff_id)

    async def _on_bot_message(self, frame_id: str, payload: dict[str, Any]) -> None:
        await self._deliver(lambda: to_inbound(self.channel_id, payload, frame_id), "bot message")
