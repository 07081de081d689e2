"""ZIM replies: one message from the robot edited with the growing answer, or plain messages.

ZIM has no stream primitive: `channels.edits.EditedReplyStream` posts the answer's first part
with `SendPeerMessage` and edits it with `EditC2cMsgBody`, naming it by the `MsgSeq` the send
returned (the handle the journal keeps for crash recovery). A text holds `max_message_bytes` of
UTF-8; what does not fit follows as messages split on paragraph and code boundaries (never
inside a character: the splitter cuts strings, and measures their UTF-8).
"""

from __future__ import annotations

from channels.cards import MessageSender
from channels.edits import EditedReplyStream
from channels.model import InboundMessage
from channels.zim.api import ZimApi
from common.errors import PermanentError


def utf8_bytes(text: str) -> int:
    """The size of `text` as ZIM counts a message body."""
    return len(text.encode())


def _user(message: InboundMessage) -> str:
    """Whom answers to `message` go to: the user who wrote to the robot."""
    return str(message.reply_handle["user_id"])


class ZimMessageSender:
    """Plain text messages from the robot, split by the caller at `limit` UTF-8 bytes."""

    def __init__(self, api: ZimApi, limit: int) -> None:
        self._api = api
        self.limit = limit

    def measure(self, text: str) -> int:
        """UTF-8 bytes, as ZIM counts a message body."""
        return utf8_bytes(text)

    async def send(self, message: InboundMessage, text: str, purpose: str) -> None:
        """One message to the user (ZIM has no idempotency key: `purpose` is not sent)."""
        await self._api.send_peer(_user(message), text)


class ZimReplyStream(EditedReplyStream):
    """Streams one answer into a robot message edited as it grows (ZIM has no cap on edits)."""

    card_name = "edited ZIM message"

    def __init__(
        self, api: ZimApi, sender: MessageSender, message: InboundMessage, *, streaming: bool
    ) -> None:
        super().__init__(sender, message, streaming=streaming)
        self._api = api
        self._user = _user(message)

    async def _post(self, text: str) -> str:
        sent = await self._api.send_peer(self._user, text)
        return str(sent.msg_seq)

    async def _edit(self, handle: str, text: str) -> None:
        try:
            msg_seq = int(handle)
        except ValueError as exc:
            raise PermanentError(f"not a ZIM MsgSeq: {handle!r}") from exc
        await self._api.edit_peer(self._user, msg_seq, text)
