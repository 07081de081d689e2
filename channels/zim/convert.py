"""ZIM message callbacks (docs/platforms/zim.md §1) to `InboundMessage`s, and their signature.

A user's message to the robot may come twice, as `bot_msg` (the robot callback) and as
`send_msg` (the message-sent callback, which the official sample uses): both carry the same
`msg_id`, which the journal dedupes. `send_msg` also reports every other message of the app: the
robot's own sends and edits (`source` 1), users talking to each other, rooms and groups. Only a
user's one-to-one message to the robot becomes an `InboundMessage`; the rest is ignored.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_plus

from channels.convert import squeeze_spaces, timestamp_ms, with_notes
from channels.model import Attachment, ChannelId, ChatType, InboundMessage, Sender

# re-exported: the tests sign with it from here
from channels.zego_signing import callback_signature as callback_signature  # noqa: PLC0414
from common.errors import PermanentError

PLATFORM = "zim"
MESSAGE_EVENTS = frozenset({"bot_msg", "send_msg"})
BEFORE_SEND = "before_send_msg"  # the pre-send hook: answered "neutral", never a question
PEER = 0  # conv_type of a one-to-one conversation
SERVER_API = 1  # `source` of a message the server API sent (the robot's own, echoed)
TEXT = 1
# msg_type of what the agent cannot read: it is told what was sent
_KINDS = {
    10: "multi-item message",
    11: "picture",
    12: "file",
    13: "audio",
    14: "video",
    100: "combined message",
    200: "custom message",
}
# What URL encoding leaves of a text: unreserved characters, `+` for spaces, and %XX escapes.
_URL_ENCODED = re.compile(r"[A-Za-z0-9_.~!*'()+%-]*%[0-9A-Fa-f]{2}[A-Za-z0-9_.~!*'()+%-]*")


def url_decoded(body: str) -> str:
    """`body`, URL-decoded when it is URL-encoded (ZIM encodes some bodies, not all): only a
    text made of what encoding leaves, with at least one escape, is decoded."""
    if not _URL_ENCODED.fullmatch(body):
        return body
    try:
        return unquote_plus(body, errors="strict")
    except UnicodeDecodeError:
        return body


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _message_id(payload: dict[str, Any]) -> str:
    """`msg_id`: a string of a 64-bit number (an integer, not a float, when a sender sends one)."""
    value = payload.get("msg_id")
    if isinstance(value, str) and value.strip():
        return value.strip()
    if (number := _int(value)) is not None:
        return str(number)
    raise PermanentError("message without a msg_id")


def _attachment(kind: str, body: str) -> Attachment:
    """What a media body names: its JSON's file name, when it has one."""
    try:
        media = json.loads(body) if body else None
    except (ValueError, RecursionError):
        media = None
    name = ""
    if isinstance(media, dict):
        name = next(
            (v for k in ("fileName", "FileName", "file_name") if (v := _str(media.get(k)))), ""
        )
    return Attachment(kind, name=name)


def _text_and_attachments(msg_type: int | None, body: str) -> tuple[str, list[Attachment]]:
    if msg_type == TEXT:
        return body, []
    kind = _KINDS.get(msg_type) if msg_type is not None else None
    return "", [
        _attachment(kind or f"type {msg_type if msg_type is not None else '?'} message", body)
    ]


def to_inbound(
    channel_id: ChannelId, payload: dict[str, Any], robot_id: str
) -> InboundMessage | None:
    """One `bot_msg` or `send_msg` callback; None when it is not a user's message to the robot,
    PermanentError when unreadable."""
    if _str(payload.get("event")) not in MESSAGE_EVENTS:
        return None
    sender = _str(payload.get("from_user_id"))
    if not sender or sender == robot_id or _int(payload.get("source")) == SERVER_API:
        return None  # the robot's own message or edit, echoed back
    if _int(payload.get("conv_type")) != PEER:
        return None  # rooms and groups
    conversation = _str(payload.get("conv_id"))
    # bot_msg leaves conv_id empty in ZEGO's example; send_msg names the robot
    if conversation != robot_id and not (conversation == "" and payload["event"] == "bot_msg"):
        return None  # two users talking to each other, or another robot
    if _int(payload.get("send_result")) not in (None, 0):
        return None  # the message was not delivered
    message_id = _message_id(payload)
    raw_body = payload.get("msg_body")
    if raw_body is not None and not isinstance(raw_body, str):
        raise PermanentError("msg_body is not a string")
    text, attachments = _text_and_attachments(
        _int(payload.get("msg_type")), url_decoded(raw_body or "")
    )
    return InboundMessage(
        channel_id=channel_id,
        platform=PLATFORM,
        message_id=message_id,
        chat_id=sender,
        chat_type=ChatType.DIRECT,
        sender=Sender(platform_id=sender),
        text=with_notes(squeeze_spaces(text), attachments),
        received_at=timestamp_ms(payload.get("msg_time")),
        attachments=tuple(attachments),
        bot_mentioned=True,
        reply_handle={"user_id": sender},
    )
