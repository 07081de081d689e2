"""WuKongIM replies: one message typed out by v2.2's message event stream, or plain messages.

The order of things (stream first, messages for what it could not show, never the same text
twice) is `channels.cards.CardReplyStream`'s; this module makes WuKongIM's calls. A stream is an
anchor message sent with `is_stream: 1` and our own `client_msg_no`, then `stream.delta` events
carrying the new text, then `stream.close` (which stores the text for history) and
`stream.finish` (docs/platforms/wukongim.md §4). Each event's id names the part of the answer
it carries, so a retried or recovered event is the same event.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass

from channels.cards import CardReplyStream, MessageSender
from channels.model import InboundMessage
from channels.splitting import split_text
from channels.wukongim.api import WuKongIMApi
from common.errors import ChannelError, PermanentError, TransientError

log = logging.getLogger(__name__)

MAIN = "main"  # the event key (lane) that carries the answer's text
FINISH_KEY = "__finish__"  # where the server files stream.finish
DELTA, CLOSE, FINISH = "stream.delta", "stream.close", "stream.finish"
_ENDED = frozenset({CLOSE, "stream.error", "stream.cancel", FINISH})
# what the anchor says: clients show the stream's text instead, and only a client (or a
# server) without the event stream ever shows this
ANCHOR_TEXT = "…"


def message_number(*parts: str) -> str:
    """A `client_msg_no` derived from `parts`: clients show one message per number (§3)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _target(message: InboundMessage) -> tuple[str, int]:
    """Where answers to `message` go: (channel_id, channel_type) from its reply handle."""
    handle = message.reply_handle
    return str(handle["channel_id"]), int(handle["channel_type"])


class WuKongIMMessageSender:
    """Plain text messages, split by the caller at `limit` characters."""

    def __init__(self, api: WuKongIMApi, limit: int) -> None:
        self._api = api
        self.limit = limit

    def measure(self, text: str) -> int:
        """Characters, as `max_message_chars` counts them."""
        return len(text)

    async def send(self, message: InboundMessage, text: str, purpose: str) -> None:
        """One message; its client_msg_no comes from the question, `purpose` and the text, so
        a retried send is the same message to clients while a different answer is not."""
        channel_id, channel_type = _target(message)
        number = message_number(message.message_id, purpose, text)
        await self._api.send_message(channel_id, channel_type, text, number)


@dataclass(frozen=True, slots=True)
class _Delta:
    """A part of the answer sent as one event: characters [start, start + len(text))."""

    start: int
    text: str


class WuKongIMReplyStream(CardReplyStream):
    """Streams one answer into an event-stream message, or sends it as plain messages."""

    card_name = "event stream"

    def __init__(
        self,
        api: WuKongIMApi,
        sender: MessageSender,
        message: InboundMessage,
        *,
        streaming: bool,
    ) -> None:
        super().__init__(sender, message)
        self._api = api
        self._streaming = streaming
        self._channel_id, self._channel_type = _target(message)
        self._unsure: _Delta | None = None  # an event whose answer was lost: it may have landed
        self._landed = False  # an event was accepted: the stream has something to close
        self._adopted = False

    def adopt(self, card_id: str, shown: str) -> None:
        """Continue a stream an earlier process anchored (crash recovery)."""
        super().adopt(card_id, shown)
        self._adopted = True
        self._landed = True

    async def _create_card(self) -> str | None:
        if not self._streaming:
            return None  # stream = "off", or a server older than the event stream
        # New for every answer, not only every question: a question answered again after a
        # restart gets a new stream, while the one the crash left is closed under its own number.
        number = message_number(self._message.message_id, "stream", uuid.uuid4().hex)
        try:
            await self._anchor(number)
        except TransientError:
            # it may have landed: the same number shows as one message
            await self._anchor(number)
        return number

    async def _anchor(self, number: str) -> None:
        await self._api.send_message(
            self._channel_id, self._channel_type, ANCHOR_TEXT, number, stream=True
        )

    def _fit(self, text: str) -> str:
        limit = self._sender.limit
        return text if len(text) <= limit else split_text(text, limit)[0]

    async def _show(self, text: str) -> None:
        await self._append(text)

    async def _end_card(self, text: str, *, failed: bool) -> None:
        if self._adopted and await self._ended_already():
            # the process that anchored it closed it, which it did only once it showed its last
            # text (a crash right after that): closing it again would type the answer twice
            log.info(
                "channel %s: stream %s was ended already", self._message.channel_id, self._card
            )
            self._card_text = text
            return
        try:
            await self._append(text)
        except ChannelError as exc:
            if not failed:
                raise  # retried, or the rest follows as messages
            # nothing retries a failed answer's end: its note follows as a message, and the
            # stream is still closed rather than left typing
            log.info("channel %s: note not streamed: %s", self._message.channel_id, exc)
        await self._close(failed=failed)

    async def _settle_stopped_card(self) -> None:
        # a stream that stopped midway must not stay "typing"; one that never took an event
        # (the event API refused the first) has nothing to close
        if not self._landed:
            return
        try:
            await self._close(failed=True)
        except ChannelError as exc:
            log.info(
                "channel %s: could not close a stopped stream: %s", self._message.channel_id, exc
            )

    # -- events ------------------------------------------------------------------------------------

    async def _append(self, text: str) -> None:
        """Send what `text` adds to what the stream shows."""
        unsure, self._unsure = self._unsure, None
        if unsure is not None and text.startswith(self._card_text + unsure.text):
            await self._delta(unsure)  # the same event again, under the same id
        shown = self._card_text
        if shown.startswith(text):
            return  # shown already (the stream may show more than a later fit of the answer)
        if not text.startswith(shown):
            raise PermanentError("the answer no longer continues what the stream shows")
        await self._delta(_Delta(len(shown), text[len(shown) :]))

    async def _delta(self, delta: _Delta) -> None:
        self._unsure = delta
        try:
            await self._event(
                f"{self._card}:{delta.start}-{delta.start + len(delta.text)}",
                DELTA,
                key=MAIN,
                payload={"kind": "text", "delta": delta.text},
            )
        except ChannelError as exc:
            if not exc.retryable:
                self._unsure = None
            raise
        self._unsure = None
        self._card_text += delta.text
        self._landed = True

    async def _close(self, *, failed: bool) -> None:
        # stream.close stores the lane's text for history (finish alone leaves it in the
        # server's memory); the snapshot is used when the server no longer holds the stream
        snapshot = {"kind": "text", "text": self._card_text}
        payload = {"end_reason": int(failed), "snapshot": snapshot}
        await self._event(f"{self._card}:close", CLOSE, key=MAIN, payload=payload)
        await self._event(f"{self._card}:finish", FINISH)

    async def _event(
        self,
        event_id: str,
        event_type: str,
        *,
        key: str = "",
        payload: dict[str, object] | None = None,
    ) -> None:
        await self._api.send_event(
            self._channel_id,
            self._channel_type,
            self._card,
            event_id,
            event_type,
            event_key=key,
            payload=payload,
        )

    async def _ended_already(self) -> bool:
        """Whether the server has this stream closed; best effort (False when unsure)."""
        try:
            events = await self._api.event_sync(self._channel_id, self._channel_type, self._card)
        except ChannelError as exc:
            log.info("channel %s: stream state unknown: %s", self._message.channel_id, exc)
            return False
        return any(
            event.get("event_key") == FINISH_KEY
            or (event.get("event_key") == MAIN and event.get("event_type") in _ENDED)
            for event in events
        )
