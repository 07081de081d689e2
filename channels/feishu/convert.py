"""`im.message.receive_v1` events (docs/platforms/feishu.md §3) to `InboundMessage`."""

from __future__ import annotations

import json
from typing import Any

from channels.convert import squeeze_spaces, timestamp_ms, with_notes
from channels.model import Attachment, ChannelId, ChatType, InboundMessage, Sender
from common.errors import PermanentError

PLATFORM = "feishu"
MESSAGE_RECEIVED = "im.message.receive_v1"

_MEDIA = {
    "image": ("picture", "image_key"),
    "file": ("file", "file_key"),
    "audio": ("audio", "file_key"),
    "media": ("video", "file_key"),
    "sticker": ("sticker", "file_key"),
}


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


class _Mentions:
    """`@_user_N` placeholders: the bot's own are removed, other people's become `@Name`."""

    def __init__(self, mentions: Any, bot_open_id: str) -> None:
        self.names: dict[str, str] = {}
        self.bot_keys: set[str] = set()
        for item in mentions if isinstance(mentions, list) else []:
            mention = _obj(item)
            key = _str(mention.get("key"))
            if not key:
                continue
            open_id = _str(_obj(mention.get("id")).get("open_id"))
            if bot_open_id and open_id == bot_open_id:
                self.bot_keys.add(key)
            self.names[key] = _str(mention.get("name"))
        # Without the bot's open_id (bot info unavailable) any mention in a group message counts:
        # Feishu pushes group messages without one only to apps holding the sensitive scope.
        self.bot_mentioned = bool(self.bot_keys) or (not bot_open_id and bool(self.names))

    def resolve(self, text: str) -> str:
        # longest keys first, so @_user_1 does not eat the start of @_user_10
        for key in sorted(self.names, key=len, reverse=True):
            replacement = "" if key in self.bot_keys else f"@{self.names[key] or 'someone'}"
            text = text.replace(key, replacement)
        return text.replace("@_all", "@all")


def _post_text(content: dict[str, Any], mentions: _Mentions) -> tuple[str, list[Attachment]]:
    """A rich-text post flattened to text lines; pictures and media become attachments."""
    lines: list[str] = []
    attachments: list[Attachment] = []
    title = _str(content.get("title"))
    if title:
        lines.append(title)
    body = content.get("content")
    for paragraph in body if isinstance(body, list) else []:
        parts: list[str] = []
        for item in paragraph if isinstance(paragraph, list) else []:
            element = _obj(item)
            tag = element.get("tag")
            if tag in ("text", "md"):
                parts.append(_str(element.get("text")))
            elif tag == "a":
                text, href = _str(element.get("text")), _str(element.get("href"))
                parts.append(f"[{text}]({href})" if href else text)
            elif tag == "at":
                parts.append(_str(element.get("user_id")) or f"@{_str(element.get('user_name'))}")
            elif tag == "code_block":
                language = _str(element.get("language")).lower()
                parts.append(f"\n```{language}\n{_str(element.get('text'))}\n```\n")
            elif tag == "hr":
                parts.append("\n---\n")
            elif tag == "img":
                attachments.append(Attachment("picture", handle=_str(element.get("image_key"))))
            elif tag == "media":
                attachments.append(Attachment("video", handle=_str(element.get("file_key"))))
            elif tag == "emotion":
                parts.append(f":{_str(element.get('emoji_type'))}:")
        lines.append(mentions.resolve("".join(parts)))
    return "\n".join(lines), attachments


def _content(message: dict[str, Any]) -> dict[str, Any]:
    raw = message.get("content")
    if not isinstance(raw, str):
        raise PermanentError("message content is not a JSON string")
    try:
        content = json.loads(raw)
    except ValueError as exc:
        raise PermanentError("message content is not JSON") from exc
    except RecursionError as exc:
        # nested past the decoder's limit: unusable, and acked as such (never redelivered)
        raise PermanentError("message content is nested too deeply") from exc
    if not isinstance(content, dict):
        raise PermanentError("message content is not a JSON object")
    return content


def _text_and_attachments(
    kind: str, content: dict[str, Any], mentions: _Mentions
) -> tuple[str, list[Attachment]]:
    if kind == "text":
        return mentions.resolve(_str(content.get("text"))), []
    if kind == "post":
        return _post_text(content, mentions)
    if kind in _MEDIA:
        attachment_kind, key = _MEDIA[kind]
        name = _str(content.get("file_name"))
        return "", [Attachment(attachment_kind, name=name, handle=_str(content.get(key)))]
    return "", [Attachment(f"{kind or 'unknown'} message")]


def event_type(event: dict[str, Any]) -> str:
    """The schema 2.0 event type, or "" when the envelope has none."""
    return _str(_obj(event.get("header")).get("event_type"))


def to_inbound(channel_id: ChannelId, event: dict[str, Any], bot_open_id: str) -> InboundMessage:
    """Parse one `im.message.receive_v1` event; PermanentError when it is unusable."""
    header = _obj(event.get("header"))
    body = _obj(event.get("event"))
    message = _obj(body.get("message"))
    sender = _obj(body.get("sender"))
    sender_ids = _obj(sender.get("sender_id"))
    for name, value in (
        ("header.event_id", header.get("event_id")),
        ("message.message_id", message.get("message_id")),
        ("message.chat_id", message.get("chat_id")),
        ("message.message_type", message.get("message_type")),
        ("sender.sender_id.open_id", sender_ids.get("open_id")),
    ):
        if not isinstance(value, str) or not value:
            raise PermanentError(f"event without a string {name}")
    chat_type = ChatType.GROUP if message.get("chat_type") == "group" else ChatType.DIRECT
    mentions = _Mentions(message.get("mentions"), bot_open_id)
    kind = _str(message.get("message_type"))
    text, attachments = _text_and_attachments(kind, _content(message), mentions)
    open_id = _str(sender_ids.get("open_id"))
    extra = {k: v for k in ("union_id", "user_id") if (v := _str(sender_ids.get(k)))}
    return InboundMessage(
        channel_id=channel_id,
        platform=PLATFORM,
        message_id=_str(message.get("message_id")),
        chat_id=_str(message.get("chat_id")),
        chat_type=chat_type,
        sender=Sender(platform_id=open_id, extra_ids=extra),
        text=with_notes(squeeze_spaces(text), attachments),
        received_at=timestamp_ms(message.get("create_time")),
        attachments=tuple(attachments),
        bot_mentioned=chat_type is ChatType.DIRECT or mentions.bot_mentioned,
        tenant=_str(header.get("tenant_key")) or _str(sender.get("tenant_key")),
        # event_id can change on redelivery while message_id stays: both dedupe
        # (docs/platforms/feishu.md §3.3)
        frame_id=_str(header.get("event_id")),
        reply_handle={
            "message_id": _str(message.get("message_id")),
            "chat_id": _str(message.get("chat_id")),
            "open_id": open_id,
            "thread_id": _str(message.get("thread_id")),
        },
    )
