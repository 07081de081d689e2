"""Easemob callbacks (docs/platforms/easemob.md §1) to `InboundMessage`s.

Two callbacks carry a user's message: the pre-send callback (no `eventType`; Easemob waits for
its verdict before delivering the message) and the post-send callback (`eventType` "chat", which
also reports every message sent through REST, the bot's own answers among them). Both name the
message by `msg_id`, which is the dedupe key: a message that came by both is journaled once.
Only a one-to-one message to the bot user becomes an `InboundMessage`; the rest is ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from channels.callbacks import signed_bytes
from channels.convert import timestamp_ms, with_notes
from channels.model import Attachment, ChannelId, ChatType, InboundMessage, Sender
from common.errors import PermanentError

PLATFORM = "easemob"
CHAT = "chat"  # `chat_type` of a one-to-one message, and the post-send `eventType` of messages
TEXT, COMMAND = "txt", "cmd"  # body types: text, and commands (never shown to a user)
_MEDIA = {
    "img": "picture",
    "audio": "audio",
    "video": "video",
    "file": "file",
    "loc": "location",
    "custom": "custom message",
    "combine": "forwarded messages",
}
# the pre-send verdict that lets a message through (§1.1)
DELIVER: Mapping[str, Any] = {"valid": True}


def security(call_id: str, secret: str, timestamp: str) -> str:
    """A callback's `security`: md5 of callId, the rule's secret and the timestamp, in hex."""
    signed = signed_bytes(call_id + secret + timestamp)
    return hashlib.md5(signed).hexdigest()  # noqa: S324 - Easemob's scheme, not our choice


@dataclass(frozen=True, slots=True)
class Envelope:
    """The signed part of a callback, and which of the two it is."""

    call_id: str
    timestamp: str  # milliseconds, as the decimal digits the signature covers
    security: str
    event_type: str | None  # None: the pre-send callback

    @property
    def pre_send(self) -> bool:
        """Easemob waits for this callback's verdict before delivering the message."""
        return self.event_type is None

    @property
    def milliseconds(self) -> int:
        return int(self.timestamp)


def envelope(body: Mapping[str, Any]) -> Envelope | None:
    """The callback's signed fields; None when one is missing or not what Easemob sends."""
    call_id, stamp, signature = body.get("callId"), body.get("timestamp"), body.get("security")
    if isinstance(stamp, int) and not isinstance(stamp, bool):
        stamp = str(stamp)
    if not (isinstance(stamp, str) and stamp.isascii() and stamp.isdigit() and len(stamp) < 20):
        return None
    if not isinstance(call_id, str) or not call_id or not isinstance(signature, str):
        return None
    event_type = body.get("eventType")
    return Envelope(call_id, stamp, signature, str(event_type) if "eventType" in body else None)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _message_id(body: Mapping[str, Any]) -> str:
    value = body.get("msg_id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # ids exceed 2^53: json.loads keeps them exact as ints
    if isinstance(value, str) and value:
        return value
    raise PermanentError("message without a msg_id")


def _bodies(payload: Any) -> list[Mapping[str, Any]]:
    """The message bodies: `{"bodies": [...]}` (post-send), or the payload itself (pre-send)."""
    if not isinstance(payload, dict):
        raise PermanentError("message without a payload object")
    bodies = payload.get("bodies") if "bodies" in payload else [payload]
    if not isinstance(bodies, list) or not bodies:
        raise PermanentError("payload without bodies")
    if not all(isinstance(body, dict) for body in bodies):
        raise PermanentError("a body is not a JSON object")
    return bodies


def _text_and_attachments(bodies: list[Mapping[str, Any]]) -> tuple[str, list[Attachment]]:
    texts: list[str] = []
    attachments: list[Attachment] = []
    for body in bodies:
        kind = body.get("type")
        if kind == TEXT:
            text = body.get("msg")
            if not isinstance(text, str):
                raise PermanentError("text body without a string msg")
            texts.append(text)
        elif isinstance(kind, str) and kind in _MEDIA:
            name = _str(body.get("filename"))
            attachments.append(Attachment(_MEDIA[kind], name=name, handle=_str(body.get("url"))))
        else:
            attachments.append(Attachment(f"{_str(kind)[:32] or 'unknown'} message"))
    return "\n".join(texts), attachments


def to_inbound(
    channel_id: ChannelId, body: Mapping[str, Any], bot_user: str
) -> InboundMessage | None:
    """A callback's message; None when it is not for the bot, PermanentError when unreadable."""
    sender, to = _str(body.get("from")), _str(body.get("to"))
    if not sender or sender == bot_user:
        return None  # the bot's own REST sends, echoed by the post-send callback
    if body.get("chat_type") != CHAT or to != bot_user:
        return None  # groups, chat rooms, threads, edits, two users talking to each other
    message_id = _message_id(body)
    bodies = _bodies(body.get("payload"))
    if all(b.get("type") == COMMAND for b in bodies):
        return None
    text, attachments = _text_and_attachments(bodies)
    return InboundMessage(
        channel_id=channel_id,
        platform=PLATFORM,
        message_id=message_id,
        chat_id=sender,
        chat_type=ChatType.DIRECT,
        sender=Sender(platform_id=sender),
        text=with_notes(text.strip(), attachments),
        received_at=timestamp_ms(body.get("timestamp")),
        attachments=tuple(attachments),
        bot_mentioned=True,
        reply_handle={"to": sender},
    )


def verdict(message: InboundMessage | None) -> Mapping[str, Any]:
    """The pre-send callback's answer for `message` (None: not for the bot): deliver it.

    The one place a future moderation step answers `{"valid": false, "code": ...}` instead.
    """
    return DELIVER
