"""The reply of platforms with no stream primitive: one message, edited with the growing text.

The answer's first part goes out as a message at the first update that has text; later updates
edit that message with the cumulative text, and the final text is the last edit. Platforms that
cap the edits of one message (`max_edits`) keep the last one for the final text and spread the
others over the answer with growing gaps, so a long answer does not spend the cap in its first
seconds. A refused post or edit (a non-retryable `ChannelError`) stops the editing and the rest
of the answer arrives as messages, once: `CardReplyStream`'s fallback, whose order of things
this reuses. A platform's `reply.py` says how to post the message and how to edit it.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable

from channels.cards import CardReplyStream, MessageSender
from channels.model import InboundMessage
from channels.splitting import split_text


class EditedReplyStream(CardReplyStream):
    """A `ReplyStream` into one message edited as the answer grows, falling back to messages."""

    card_name = "edited message"
    # the platform's cap on the edits of one message (the final text's included); None: no cap
    max_edits: int | None = None
    # with a cap, the n-th intermediate edit waits n x this many seconds after the previous call
    edit_spacing: float = 1.0

    def __init__(
        self,
        sender: MessageSender,
        message: InboundMessage,
        *,
        streaming: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(sender, message)
        self._streaming = streaming
        self._clock = clock
        self._edits = 0  # edits that landed on this message
        self._last_call = 0.0  # clock time of the last post or edit

    # -- what a platform provides ------------------------------------------------------------------

    @abstractmethod
    async def _post(self, text: str) -> str:
        """Send `text` as the answer's message; the handle its edits need."""

    @abstractmethod
    async def _edit(self, handle: str, text: str) -> None:
        """Replace the text of the message `handle` with `text`."""

    # -- CardReplyStream ---------------------------------------------------------------------------

    async def begin(self) -> None:
        """Nothing to create yet: the message is posted at the first update with text."""
        self._card_live = self._streaming

    def adopt(self, card_id: str, shown: str) -> None:
        """Continue a message an earlier process posted (crash recovery): only its final edit
        is left to make."""
        super().adopt(card_id, shown)
        if self.max_edits is not None:
            self._edits = self.max_edits - 1

    async def _create_card(self) -> str | None:
        return None  # never called: `begin` posts nothing

    def _fit(self, text: str) -> str:
        limit, measure = self._sender.limit, self._sender.measure
        return text if measure(text) <= limit else split_text(text, limit, measure)[0]

    async def _show(self, text: str) -> None:
        if self._card_id is None:
            if text.strip():
                await self._post_first(text)
            return
        if self._edit_due():
            await self._replace(self._card_id, text)

    async def _end_card(self, text: str, *, failed: bool) -> None:
        if self._card_id is None:
            if text.strip():
                await self._post_first(text)  # the answer was complete before any update
            return
        if text != self._card_text:
            await self._replace(self._card_id, text)  # the edit kept for the final text

    # -- the calls ---------------------------------------------------------------------------------

    def _edit_due(self) -> bool:
        """Whether an intermediate edit may be made now; with a cap, the last edit is the final
        text's and the n-th waits n x `edit_spacing` after the previous call."""
        if self.max_edits is None:
            return True
        if self._edits >= self.max_edits - 1:
            return False
        return self._clock() - self._last_call >= self.edit_spacing * (self._edits + 1)

    async def _post_first(self, text: str) -> None:
        handle = await self._post(text)
        self._card_id = handle
        self._card_text = text
        self._last_call = self._clock()

    async def _replace(self, handle: str, text: str) -> None:
        await self._edit(handle, text)
        self._edits += 1
        self._card_text = text
        self._last_call = self._clock()
