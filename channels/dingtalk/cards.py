"""Reply streams for DingTalk: an AI card that streams, with a markdown-message fallback.

One state machine per reply (DESIGN.md "Streaming, rate limits, fallback"):
card → (creation fails) messages; card → (final update fails for good) the card keeps what it
showed and the rest goes out as a message that says so. Never the same text twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from channels.dingtalk.api import DingTalkApi
from channels.model import ChatType, Delivered, InboundMessage
from channels.tail import MessageTail
from common.errors import AuthError, ChannelError, PermanentError

log = logging.getLogger(__name__)

# DingTalk does not document a hard length for robot markdown; this stays well inside what
# every client renders, and long answers are split rather than cut.
MARKDOWN_LIMIT = 3500
# a sessionWebhook this close to its expiry is not worth the attempt
WEBHOOK_MARGIN_MS = 30_000
TITLE = "Reply"

FLOW_PROCESSING, FLOW_INPUTTING, FLOW_FINISHED, FLOW_FAILED = "1", "2", "3", "5"


class MessageSender:
    """Plain markdown answers: sessionWebhook while valid, robot OpenAPI after it expires."""

    def __init__(self, api: DingTalkApi, clock: Callable[[], float] = time.time) -> None:
        self._api = api
        self._clock = clock

    async def send(self, message: InboundMessage, markdown: str) -> None:
        handle = message.reply_handle
        webhook = str(handle.get("session_webhook", ""))
        expires_ms = int(handle.get("session_webhook_expires_ms", 0))
        if webhook and expires_ms - WEBHOOK_MARGIN_MS > self._clock() * 1000:
            try:
                await self._api.send_by_session(webhook, markdown=markdown, title=TITLE)
            except (PermanentError, AuthError) as exc:
                # the session ended early (DingTalk answers errcode on HTTP 200): robot API instead
                log.info("channel %s: sessionWebhook refused (%s)", message.channel_id, exc)
            else:
                return
        if message.chat_type is ChatType.GROUP:
            await self._api.send_to_group(message.chat_id, markdown=markdown, title=TITLE)
        else:
            staff_id = str(handle.get("sender_staff_id", ""))
            if not staff_id:
                raise ChannelError("sessionWebhook expired and the sender has no staffId")
            await self._api.send_to_users([staff_id], markdown=markdown, title=TITLE)


class DingTalkReplyStream:
    """Streams one answer into an AI card, or sends it as markdown messages."""

    def __init__(
        self,
        api: DingTalkApi,
        sender: MessageSender,
        message: InboundMessage,
        *,
        template_id: str,
        content_key: str,
    ) -> None:
        self._api = api
        self._sender = sender
        self._message = message
        self._template_id = template_id
        self._key = content_key
        self._card_id: str | None = None
        self._card_live = False
        self._card_text = ""  # what the card shows
        self._tail = MessageTail(MARKDOWN_LIMIT)  # the message fallback
        self._inputting = False
        self._done = False

    @property
    def delivered(self) -> Delivered:
        return Delivered(self._card_id, self._card_text + self._tail.text, self._tail.sent)

    @property
    def streaming(self) -> bool:
        return self._card_live

    def adopt(self, card_id: str, shown: str) -> None:
        """Continue a card an earlier process created (crash recovery)."""
        self._card_id = card_id
        self._card_live = True
        self._inputting = True
        self._card_text = shown

    async def begin(self) -> None:
        """Create and deliver the card; on any failure the reply continues as messages."""
        if not self._template_id:
            return
        out_track_id = uuid.uuid4().hex
        handle = self._message.reply_handle
        try:
            await self._api.create_and_deliver_card(
                template_id=self._template_id,
                out_track_id=out_track_id,
                card_data={self._key: "", "flowStatus": FLOW_PROCESSING},
                conversation_type=str(handle.get("conversation_type", "1")),
                conversation_id=self._message.chat_id,
                sender_staff_id=str(handle.get("sender_staff_id", "")),
            )
        except ChannelError as exc:
            log.warning(
                "channel %s: AI card unavailable (%s: %s); answering with messages",
                self._message.channel_id,
                type(exc).__name__,
                exc,
            )
            return
        self._card_id = out_track_id
        self._card_live = True

    async def update(self, text_so_far: str) -> None:
        if not self._card_live or self._card_id is None:
            return  # messages are sent whole at the end
        try:
            if not self._inputting:
                await self._api.update_card(self._card_id, {"flowStatus": FLOW_INPUTTING})
                self._inputting = True
            await self._api.stream_card(self._card_id, self._key, text_so_far)
        except ChannelError as exc:
            if exc.retryable:
                raise  # the emitter skips this update and slows down
            self._card_live = (
                False  # e.g. Card.Streaming.Write missing: the answer goes as messages
            )
            log.warning(
                "channel %s: card streaming refused (%s: %s); the answer will follow as a message",
                self._message.channel_id,
                type(exc).__name__,
                exc,
            )
            return
        self._card_text = text_so_far

    async def finish(self, final_text: str) -> None:
        if self._done:
            return
        if self._card_live and self._card_id is not None:
            try:
                await self._close_card(final_text, FLOW_FINISHED, error=False)
            except ChannelError as exc:
                if exc.retryable:
                    raise  # the emitter retries the final update until its deadline
                self._card_live = False
                log.warning(
                    "channel %s: final card update failed (%s); sending the rest as a message",
                    self._message.channel_id,
                    type(exc).__name__,
                )
                await self._send_rest(final_text)
                await self._settle_dead_card()
            else:
                self._done = True
                return
        else:
            await self._send_rest(final_text)
            await self._settle_dead_card()
        self._done = True

    async def fail(self, reason: str, partial_text: str = "") -> None:
        if self._done:
            return
        shown = f"{partial_text}\n\n{reason}" if partial_text else reason
        if self._card_live and self._card_id is not None:
            try:
                await self._close_card(shown, FLOW_FAILED, error=True)
            except ChannelError:
                self._card_live = False
            else:
                self._done = True
                return
        await self._send_rest(shown)
        self._done = True

    async def _settle_dead_card(self) -> None:
        """A card that stopped streaming must not stay on "thinking" forever: best effort."""
        if self._card_id is None or self._card_live:
            return
        note = f"{self._card_text}\n\n(continued below)" if self._card_text else "(see below)"
        try:
            await self._api.update_card(
                self._card_id, {self._key: note, "flowStatus": FLOW_FINISHED}
            )
        except ChannelError as exc:
            log.info("channel %s: could not settle a dead card: %s", self._message.channel_id, exc)

    async def _close_card(self, text: str, flow_status: str, *, error: bool) -> None:
        if self._card_id is None:
            raise ChannelError("no card to close")
        await self._api.stream_card(self._card_id, self._key, text, finalize=True, error=error)
        self._card_text = text
        await self._api.update_card(self._card_id, {self._key: text, "flowStatus": flow_status})

    async def _send_rest(self, text: str) -> None:
        """Send what the card has not shown, resuming where an earlier attempt stopped."""

        async def send_one(chunk: str, _: int) -> None:
            await self._sender.send(self._message, chunk)

        await self._tail.send(self._card_text, text, send_one)
