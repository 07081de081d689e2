"""The reply every platform streams into a card, with plain messages as the fallback.

One state machine per reply: card → (creation fails) messages; card → (refused for good while
streaming or at the end) the card keeps what it showed and the rest goes out as messages that
say so. Never the same text twice (`MessageTail`). A platform's `cards.py` says how to create,
show and end its card and how to send one message; the order of things lives here.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import ClassVar, Protocol

from channels.model import Delivered, InboundMessage
from channels.tail import MessageTail
from common.errors import ChannelError

log = logging.getLogger(__name__)


class MessageSender(Protocol):
    """Sends one plain (markdown) message in answer to an inbound message."""

    limit: int  # the most one message holds, in `measure` units

    def measure(self, text: str) -> int:
        """Size of `text` as the platform counts it."""
        ...

    async def send(self, message: InboundMessage, text: str, purpose: str) -> None:
        """`purpose` names the message within its answer, for platforms that dedupe retries."""
        ...


class CardReplyStream(ABC):
    """A `ReplyStream` into one card, falling back to messages; subclasses make the calls."""

    card_name: ClassVar[str] = "card"  # what the platform calls it, for the logs

    def __init__(self, sender: MessageSender, message: InboundMessage) -> None:
        self._sender = sender
        self._message = message
        self._card_id: str | None = None
        self._card_live = False
        self._card_stopped = False  # refused for good before the answer was complete
        self._card_text = ""  # what the card shows; subclasses set it as the platform accepts
        self._tail = MessageTail(sender.limit, sender.measure)  # the message fallback
        self._done = False

    @property
    def delivered(self) -> Delivered:
        return Delivered(self._card_id, self._card_text + self._tail.text)

    def adopt(self, card_id: str, shown: str) -> None:
        """Continue a card an earlier process created (crash recovery)."""
        self._card_id = card_id
        self._card_live = True
        self._card_text = shown

    async def begin(self) -> None:
        """Create and deliver the card; on any failure the answer goes as messages."""
        try:
            card_id = await self._create_card()
        except ChannelError as exc:
            log.warning(
                "channel %s: %s unavailable (%s: %s); answering with messages",
                self._message.channel_id,
                self.card_name,
                type(exc).__name__,
                exc,
            )
            return
        if card_id is not None:
            self._card_id = card_id
            self._card_live = True

    @property
    def _card(self) -> str:
        """The card's id; only asked for while the card is live."""
        if self._card_id is None:
            raise ChannelError("no card")
        return self._card_id

    # -- what a platform provides ------------------------------------------------------------------

    @abstractmethod
    async def _create_card(self) -> str | None:
        """Create and deliver an empty card; its id, or None when this channel has no card."""

    @abstractmethod
    async def _show(self, text: str) -> None:
        """Put `text` on the live card (and record it in `_card_text`)."""

    @abstractmethod
    async def _end_card(self, text: str, *, failed: bool) -> None:
        """Show `text` as the card's last content and end its streaming state."""

    def _fit(self, text: str) -> str:
        """What of `text` the card can hold (the rest follows as messages at the end)."""
        return text

    async def _settle_stopped_card(self) -> None:
        """Leave a card that stopped streaming in a sane state; best effort."""
        # by default as it is: a card that was refused further calls keeps what it showed
        return None

    # -- ReplyStream -------------------------------------------------------------------------------

    async def update(self, text_so_far: str) -> None:
        if not self._card_live:
            return  # messages are sent whole at the end
        shown = self._fit(text_so_far)
        if shown == self._card_text:
            return
        try:
            await self._show(shown)
        except ChannelError as exc:
            if exc.retryable:
                raise  # the emitter skips this update and slows down
            self._stop_card(exc)

    async def finish(self, final_text: str) -> None:
        if self._done:
            return
        if self._card_live:
            try:
                await self._end_card(self._fit(final_text), failed=False)
            except ChannelError as exc:
                if exc.retryable:
                    raise  # the emitter retries the final text until its deadline
                self._stop_card(exc)
            else:
                self._card_live = False
        await self._send_rest(final_text)
        if self._card_stopped:
            await self._settle_stopped_card()
        self._done = True

    async def fail(self, reason: str, partial_text: str = "") -> None:
        if self._done:
            return
        shown = f"{partial_text}\n\n{reason}" if partial_text else reason
        if self._card_live:
            try:
                await self._end_card(self._fit(shown), failed=True)
            except ChannelError as exc:
                self._stop_card(exc)
            else:
                self._card_live = False
        await self._send_rest(shown)
        self._done = True

    def _stop_card(self, exc: ChannelError) -> None:
        self._card_live = False
        self._card_stopped = True
        log.warning(
            "channel %s: %s refused (%s: %s); the rest follows as messages",
            self._message.channel_id,
            self.card_name,
            type(exc).__name__,
            exc,
        )

    async def _send_rest(self, text: str) -> None:
        """Send what the card has not shown, resuming where an earlier attempt stopped."""

        async def send_one(chunk: str, index: int) -> None:
            await self._sender.send(self._message, chunk, f"answer-{index}")

        await self._tail.send(self._card_text, text, send_one)
