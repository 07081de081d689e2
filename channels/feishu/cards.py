"""Feishu replies: a CardKit streaming card, with rich-text (post) messages as the fallback.

The order of things (card first, messages for what it could not show, never the same text
twice) is `channels.cards.CardReplyStream`'s; this module makes Feishu's calls. Every card
operation carries a sequence strictly above the previous one (300317 otherwise) and a uuid; a
retry of the same operation reuses both, so an operation that landed before its answer was lost
is not applied twice. Messages carry a uuid derived from what they say, so a retry never posts
twice (Feishu dedupes a uuid for an hour).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from channels.cards import CardReplyStream, MessageSender
from channels.feishu.api import FeishuApi, FeishuApiError, SequenceConflict, StreamingClosed
from channels.model import InboundMessage
from channels.splitting import split_text
from common.errors import ChannelError, TransientError

log = logging.getLogger(__name__)

ELEMENT_ID = "answer"
# A card may hold 30 KB of JSON and a post 30 KB; text is measured in UTF-8 bytes with room left
# for the JSON around it and its escaping.
CARD_TEXT_BYTES = 20_000
POST_TEXT_BYTES = 20_000
PLACEHOLDER = "…"
SUMMARY_CHARS = 60
# A card taken over after a restart: its last sequence is unknown, so start far above anything
# one reply uses.
RESUMED_SEQUENCE = 100_000
SEQUENCE_JUMP = 1_000  # after a 300317, skip ahead rather than probe one step at a time
CLOSED_BY_SETTINGS = 300309  # not 200850, the 10-minute timeout (docs/platforms/feishu.md §4.4)
TARGET_GONE = frozenset({230011})  # the message to reply to was recalled: post to the chat


def utf8_len(text: str) -> int:
    """Size as Feishu counts it."""
    return len(text.encode())


def idempotency_key(*parts: str) -> str:
    """A stable uuid (≤ 50 characters) for one logical message or card operation."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def streaming_card(summary: str = "") -> dict[str, Any]:
    """Card JSON 2.0 with one markdown element that streams (docs/platforms/feishu.md §4.4)."""
    return {
        "schema": "2.0",
        "config": {
            "streaming_mode": True,
            "summary": {"content": summary},
            "streaming_config": {
                "print_frequency_ms": {"default": 50},
                "print_step": {"default": 2},
                "print_strategy": "fast",
            },
        },
        "body": {
            "elements": [{"tag": "markdown", "content": PLACEHOLDER, "element_id": ELEMENT_ID}]
        },
    }


def post_content(markdown: str) -> dict[str, Any]:
    """A `post` message with one markdown paragraph (no outer "post" key: that is 230001)."""
    return {"zh_cn": {"title": "", "content": [[{"tag": "md", "text": markdown}]]}}


class FeishuMessageSender:
    """Plain answers: a reply to the user's message, or a post to the chat if it is gone."""

    limit = POST_TEXT_BYTES

    def __init__(self, api: FeishuApi) -> None:
        self._api = api

    def measure(self, text: str) -> int:
        """UTF-8 bytes, as Feishu counts a post."""
        return utf8_len(text)

    async def send(self, message: InboundMessage, text: str, purpose: str) -> None:
        """One post; its uuid comes from `purpose` and the text, so a retry never posts twice."""
        key = idempotency_key(message.message_id, purpose, text)
        content = post_content(text)
        try:
            await self._api.reply(message.message_id, "post", content, key)
        except FeishuApiError as exc:
            if exc.code not in TARGET_GONE:
                raise
            log.info("channel %s: message to reply to is gone; posting", message.channel_id)
            await self._api.send(message.chat_id, "post", content, key)


@dataclass
class _Op:
    """A card operation that may or may not have landed: retried with the same identity."""

    sequence: int
    key: str
    body: str


class FeishuReplyStream(CardReplyStream):
    """Streams one answer into a CardKit card, or sends it as post messages."""

    card_name = "streaming card"

    def __init__(self, api: FeishuApi, sender: MessageSender, message: InboundMessage) -> None:
        super().__init__(sender, message)
        self._api = api
        self._sequence = 0
        self._unsure: _Op | None = None
        self._adopted = False

    def adopt(self, card_id: str, shown: str) -> None:
        """Continue a card an earlier process created (crash recovery)."""
        super().adopt(card_id, shown)
        self._sequence = RESUMED_SEQUENCE
        self._adopted = True

    async def _create_card(self) -> str:
        card_id = await self._api.create_card(streaming_card())
        key = idempotency_key(self._message.message_id, "card", card_id)
        content = {"type": "card", "data": {"card_id": card_id}}
        try:
            await self._api.reply(self._message.message_id, "interactive", content, key)
        except TransientError:
            # it may have landed before the answer was lost: the same uuid cannot post twice
            await self._api.reply(self._message.message_id, "interactive", content, key)
        return card_id

    async def _card_op(self, body: str, call: Callable[[int, str], Awaitable[None]]) -> None:
        """Runs one sequenced operation; a 300317 skips the sequence ahead and tries once more."""
        op = self._unsure if self._unsure is not None and self._unsure.body == body else None
        if op is None:
            self._sequence += 1
            op = self._new_op(body)
        self._unsure = op
        try:
            await call(op.sequence, op.key)
        except SequenceConflict:
            self._sequence = max(self._sequence, op.sequence) + SEQUENCE_JUMP
            op = self._unsure = self._new_op(body)
            log.info("channel %s: card sequence conflict; skipped ahead", self._message.channel_id)
            await call(op.sequence, op.key)
        except ChannelError as exc:
            if not exc.retryable:
                self._unsure = None
            raise
        self._unsure = None

    def _new_op(self, body: str) -> _Op:
        key = idempotency_key(self._card_id or "", str(self._sequence))
        return _Op(self._sequence, key, body)

    async def _show(self, text: str) -> None:
        card_id = self._card
        shown = text or PLACEHOLDER

        async def call(sequence: int, key: str) -> None:
            await self._api.stream_text(card_id, ELEMENT_ID, shown, sequence, key)

        await self._card_op("text:" + shown, call)
        self._card_text = text

    async def _end_card(self, text: str, *, failed: bool) -> None:
        try:
            await self._close_card(text)
        except StreamingClosed as exc:
            if not self._adopted or exc.code != CLOSED_BY_SETTINGS:
                raise
            # The process that created this card closed it, which it does only once the card
            # shows its last text: ended already (recovery after a crash right after that).
            log.info("channel %s: card %s was ended already", self._message.channel_id, self._card)
            self._card_text = text

    async def _close_card(self, text: str) -> None:
        # a failed answer ends like any other: its text says what went wrong
        if text != self._card_text:
            await self._show(text)
        card_id = self._card
        summary = self._card_text.replace("\n", " ")[:SUMMARY_CHARS]
        settings = {"config": {"streaming_mode": False, "summary": {"content": summary}}}

        async def call(sequence: int, key: str) -> None:
            await self._api.card_settings(card_id, settings, sequence, key)

        await self._card_op("close", call)

    def _fit(self, text: str) -> str:
        if utf8_len(text) <= CARD_TEXT_BYTES:
            return text
        return split_text(text, CARD_TEXT_BYTES, measure=utf8_len)[0]
