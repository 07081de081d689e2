"""Easemob replies: text messages from the bot user, or one message rewritten as the answer grows.

Easemob has no stream primitive. With `stream = "edit"` the answer's first part is sent as a
message and then rewritten (`PUT /messages/rewrite/{msg_id}`) with the growing text, at most 9
times: Easemob refuses the 11th edit of a message, and the ninth is kept for the final text
(`channels.edits.EditedReplyStream`). Rewriting is a feature Easemob enables per app: when it is
refused, rewriting stops and the rest of the answer follows as messages, once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from channels.cards import MessageSender
from channels.easemob.api import EasemobApi
from channels.edits import EditedReplyStream
from channels.model import InboundMessage
from common.errors import PermanentError

MAX_REWRITES = 9  # Easemob's cap is 10 edits a message (403 EditLimitExceededException)


def utf8_bytes(text: str) -> int:
    """Bytes of `text` in UTF-8, as Easemob counts a message body."""
    return len(text.encode("utf-8", "surrogatepass"))


def _recipient(message: InboundMessage) -> str:
    return str(message.reply_handle["to"])


class EasemobMessageSender:
    """Plain text messages, split by the caller at `limit` bytes of UTF-8."""

    def __init__(self, api: EasemobApi, limit: int) -> None:
        self._api = api
        self.limit = limit

    def measure(self, text: str) -> int:
        """Bytes of UTF-8, as `max_message_bytes` counts them."""
        return utf8_bytes(text)

    async def send(self, message: InboundMessage, text: str, purpose: str) -> None:
        """One message to the user who asked (Easemob has no idempotency key for sends)."""
        await self._api.send_text(_recipient(message), text)


class EasemobReplyStream(EditedReplyStream):
    """One message rewritten as the answer grows (or messages only, with `stream = "off"`)."""

    card_name = "rewritten message"
    max_edits = MAX_REWRITES

    def __init__(
        self,
        api: EasemobApi,
        sender: MessageSender,
        message: InboundMessage,
        *,
        streaming: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(sender, message, streaming=streaming, clock=clock)
        self._api = api

    async def _post(self, text: str) -> str:
        # an answer that named no message id leaves a message that cannot be rewritten: its
        # first edit is refused and the rest follows as messages
        return await self._api.send_text(_recipient(self._message), text)

    async def _edit(self, handle: str, text: str) -> None:
        if not handle:
            raise PermanentError("easemob: the first message's id is unknown; cannot rewrite it")
        await self._api.rewrite(handle, text)
