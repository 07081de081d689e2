"""DingTalk replies: an AI card that streams, with markdown messages as the fallback.

The order of things (card first, messages for what it could not show, never the same text
twice) is `channels.cards.CardReplyStream`'s; this module makes DingTalk's calls. An AI card
moves through flowStatus processing → inputting → finished (or failed); a card refused midway is
settled as finished, so it never stays on "thinking".
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from channels.cards import CardReplyStream, MessageSender
from channels.dingtalk.api import DingTalkApi
from channels.model import ChatType, InboundMessage
from common.errors import AuthError, ChannelError, PermanentError

log = logging.getLogger(__name__)

# DingTalk does not document a hard length for robot markdown; this stays well inside what
# every client renders, and long answers are split rather than cut.
MARKDOWN_LIMIT = 3500
# a sessionWebhook this close to its expiry is not worth the attempt
WEBHOOK_MARGIN_MS = 30_000
TITLE = "Reply"

FLOW_PROCESSING, FLOW_INPUTTING, FLOW_FINISHED, FLOW_FAILED = "1", "2", "3", "5"


class DingTalkMessageSender:
    """Plain markdown answers: sessionWebhook while valid, robot OpenAPI after it expires."""

    limit = MARKDOWN_LIMIT

    def __init__(self, api: DingTalkApi, clock: Callable[[], float] = time.time) -> None:
        self._api = api
        self._clock = clock

    def measure(self, text: str) -> int:
        """Characters, as DingTalk's limits are stated."""
        return len(text)

    async def send(self, message: InboundMessage, text: str, purpose: str) -> None:
        """One markdown message; `purpose` goes unused (robot messages take no idempotency key)."""
        handle = message.reply_handle
        webhook = str(handle.get("session_webhook", ""))
        expires_ms = int(handle.get("session_webhook_expires_ms", 0))
        if webhook and expires_ms - WEBHOOK_MARGIN_MS > self._clock() * 1000:
            try:
                await self._api.send_by_session(webhook, markdown=text, title=TITLE)
            except (PermanentError, AuthError) as exc:
                # the session ended early (DingTalk answers errcode on HTTP 200): robot API instead
                log.info("channel %s: sessionWebhook refused (%s)", message.channel_id, exc)
            else:
                return
        if message.chat_type is ChatType.GROUP:
            await self._api.send_to_group(message.chat_id, markdown=text, title=TITLE)
        else:
            staff_id = str(handle.get("sender_staff_id", ""))
            if not staff_id:
                raise ChannelError("sessionWebhook expired and the sender has no staffId")
            await self._api.send_to_users([staff_id], markdown=text, title=TITLE)


class DingTalkReplyStream(CardReplyStream):
    """Streams one answer into an AI card, or sends it as markdown messages."""

    card_name = "AI card"

    def __init__(
        self,
        api: DingTalkApi,
        sender: MessageSender,
        message: InboundMessage,
        *,
        template_id: str,
        content_key: str,
    ) -> None:
        super().__init__(sender, message)
        self._api = api
        self._template_id = template_id
        self._key = content_key
        self._inputting = False

    def adopt(self, card_id: str, shown: str) -> None:
        """Continue a card an earlier process created (crash recovery)."""
        super().adopt(card_id, shown)
        self._inputting = True

    async def _create_card(self) -> str | None:
        if not self._template_id:
            return None  # no template configured: answers go as messages
        out_track_id = uuid.uuid4().hex
        handle = self._message.reply_handle
        await self._api.create_and_deliver_card(
            template_id=self._template_id,
            out_track_id=out_track_id,
            card_data={self._key: "", "flowStatus": FLOW_PROCESSING},
            conversation_type=str(handle.get("conversation_type", "1")),
            conversation_id=self._message.chat_id,
            sender_staff_id=str(handle.get("sender_staff_id", "")),
        )
        return out_track_id

    async def _show(self, text: str) -> None:
        if not self._inputting:
            await self._api.update_card(self._card, {"flowStatus": FLOW_INPUTTING})
            self._inputting = True
        await self._api.stream_card(self._card, self._key, text)
        self._card_text = text

    async def _end_card(self, text: str, *, failed: bool) -> None:
        await self._api.stream_card(self._card, self._key, text, finalize=True, error=failed)
        self._card_text = text
        flow_status = FLOW_FAILED if failed else FLOW_FINISHED
        await self._api.update_card(self._card, {self._key: text, "flowStatus": flow_status})

    async def _settle_stopped_card(self) -> None:
        note = f"{self._card_text}\n\n(continued below)" if self._card_text else "(see below)"
        try:
            await self._api.update_card(self._card, {self._key: note, "flowStatus": FLOW_FINISHED})
        except ChannelError as exc:
            log.info("channel %s: could not settle a dead card: %s", self._message.channel_id, exc)
