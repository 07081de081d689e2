"""WuKongIM webhook callbacks (docs/platforms/wukongim.md §1) to `InboundMessage`s.

`msg.notify` carries every message the server stored, of every chat: the bot's own (echoed
back), other users talking to each other, groups the bot is in. Only what a user said to the bot,
directly or in a group, becomes an `InboundMessage`; the rest is counted as ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from channels.convert import squeeze_spaces, with_notes
from channels.model import Attachment, ChannelId, ChatType, InboundMessage, Sender
from common.errors import PermanentError

PLATFORM = "wukongim"
MESSAGE_NOTIFY = "msg.notify"

PERSON, GROUP = 1, 2  # channel types (§1.3)
TEXT, COMMAND = 1, 99  # payload types: text, and the SDKs' command messages (never shown)
# Payload types of the WuKongIM UI kits' media messages (§1.4); the server enforces none.
_MEDIA = {
    2: "picture",
    3: "sticker",  # GIF
    4: "audio",  # voice
    5: "video",
    6: "location",
    7: "contact card",
    8: "file",
}


def query_params(raw: str) -> dict[str, str]:
    """The callback URL's query. v2.2.5 builds the URL as `httpAddr + "?event=" + event`, so
    with `?key=K` in `httpAddr` the query arrives as `key=K?event=msg.notify`: a `?` inside
    the query separates parameters like `&` (§1.2). The first value of a name wins."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(raw.replace("?", "&"), keep_blank_values=True):
        params.setdefault(name, value)
    return params


@dataclass
class Batch:
    """What one `msg.notify` body held."""

    messages: list[InboundMessage] = field(default_factory=list)
    ignored: int = 0  # the bot's echo, system messages, chats that are not the bot's
    malformed: int = 0  # items that could not be read (skipped, not the batch)


def to_batch(channel_id: ChannelId, items: Sequence[Any], bot_uid: str) -> Batch:
    """Converts a `msg.notify` array item by item; an unreadable item is counted and skipped."""
    batch = Batch()
    for item in items:
        try:
            message = to_inbound(channel_id, item, bot_uid)
        except PermanentError:
            batch.malformed += 1
            continue
        if message is None:
            batch.ignored += 1
        else:
            batch.messages.append(message)
    return batch


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    # bool is an int in Python; a float would be a message id rounded past 2^53
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _message_id(item: dict[str, Any]) -> str:
    """`message_idstr`, else `message_id` as the integer it is (it exceeds 2^53)."""
    if text := _str(item.get("message_idstr")):
        return text
    number = _int(item.get("message_id"))
    if number is None:
        raise PermanentError("message without message_idstr or an integer message_id")
    return str(number)


def _payload(item: dict[str, Any]) -> dict[str, Any]:
    """The payload: base64 (Go's encoding of []byte) of a JSON object."""
    raw = item.get("payload")
    if not isinstance(raw, str) or not raw:
        raise PermanentError("message without a payload")
    try:
        payload = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise PermanentError("payload is not base64 of JSON") from exc
    except RecursionError as exc:
        raise PermanentError("payload is nested too deeply") from exc
    if not isinstance(payload, dict):
        raise PermanentError("payload is not a JSON object")
    return payload


def _mentions_bot(payload: dict[str, Any], bot_uid: str) -> bool:
    # `mention.all` addresses everyone, not a question to the bot
    mention = payload.get("mention")
    uids = mention.get("uids") if isinstance(mention, dict) else None
    return isinstance(uids, list) and bot_uid in uids


def _text_and_attachments(payload: dict[str, Any]) -> tuple[str, list[Attachment]]:
    kind = _int(payload.get("type"))
    if kind == TEXT:
        content = payload.get("content")
        if not isinstance(content, str):
            raise PermanentError("text payload without a string content")
        return content, []
    if kind in _MEDIA:
        name = _str(payload.get("name"))
        return "", [Attachment(_MEDIA[kind], name=name, handle=_str(payload.get("url")))]
    return "", [Attachment(f"type {kind if kind is not None else '?'} message")]


def _received_at(value: Any) -> datetime:
    seconds = _int(value)  # seconds, not milliseconds (§1.3)
    try:
        return datetime.fromtimestamp(seconds, UTC) if seconds else datetime.now(UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.now(UTC)


def to_inbound(channel_id: ChannelId, item: Any, bot_uid: str) -> InboundMessage | None:
    """One `msg.notify` item; None when it is not for the bot, PermanentError when unreadable."""
    if not isinstance(item, dict):
        raise PermanentError("message is not a JSON object")
    from_uid = _str(item.get("from_uid"))
    channel = _str(item.get("channel_id"))
    channel_type = _int(item.get("channel_type"))
    if not from_uid or from_uid == bot_uid:
        return None  # the system (an empty uid), or the bot's own message echoed back
    if channel_type == PERSON:
        # the webhook names the participant who did not send it: the bot, for a user's DM
        if channel != bot_uid:
            return None  # two users talking to each other
        chat_type, chat_id = ChatType.DIRECT, from_uid
    elif channel_type == GROUP and channel:
        chat_type, chat_id = ChatType.GROUP, channel
    else:
        return None  # customer service, community, live, agent channels...
    message_id = _message_id(item)
    payload = _payload(item)
    if _int(payload.get("type")) == COMMAND:
        return None
    text, attachments = _text_and_attachments(payload)
    mentioned = chat_type is ChatType.DIRECT or _mentions_bot(payload, bot_uid)
    if chat_type is ChatType.GROUP:
        text = text.replace(f"@{bot_uid}", "")
    return InboundMessage(
        channel_id=channel_id,
        platform=PLATFORM,
        message_id=message_id,
        chat_id=chat_id,
        chat_type=chat_type,
        sender=Sender(platform_id=from_uid),
        text=with_notes(squeeze_spaces(text), attachments),
        received_at=_received_at(item.get("timestamp")),
        attachments=tuple(attachments),
        bot_mentioned=mentioned,
        reply_handle={
            # where the answer goes: the user's person channel, or the group
            "channel_id": chat_id,
            "channel_type": PERSON if chat_type is ChatType.DIRECT else GROUP,
        },
    )
