"""Event envelopes, message contents and Message objects exactly as Feishu shapes them.

The `im.message.receive_v1` envelope follows docs/platforms/feishu.md §3.1 (schema 2.0; timestamps
are strings of milliseconds; `content` is a JSON string; mentions appear in text as `@_user_N`
placeholders). The `token` header field is empty, as observed over the long connection [report].
Where in the text a user typed an @-mention is not modelled: the placeholders of everyone
mentioned (the bot first) lead the text, unless the text already holds its own placeholders.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from channels.emulator.state import Delivered
from channels.feishu.emulator.state import FeishuApp, stable_hex

RECEIVE_EVENT = "im.message.receive_v1"
SEND_TYPES = (
    "text",
    "post",
    "image",
    "file",
    "audio",
    "media",
    "sticker",
    "interactive",
    "share_chat",
    "share_user",
)


@dataclass(frozen=True, slots=True)
class Mention:
    """Someone @-mentioned in a user message."""

    open_id: str
    name: str

    @classmethod
    def of(cls, value: Mention | str | Mapping[str, Any]) -> Mention:
        """Accepts a Mention, an open_id, or a dict with `open_id` and `name`."""
        if isinstance(value, Mention):
            return value
        if isinstance(value, str):
            return cls(value, value)
        return cls(str(value["open_id"]), str(value.get("name", value["open_id"])))


@dataclass(frozen=True, slots=True)
class UserMessage(Delivered):
    """What `send_user_message` did: ids to correlate acks, replies and the chat view."""

    event_id: str
    message_id: str  # the om_ id
    chat_id: str
    frame_message_id: str  # the pbbp2 `message_id` header of the first delivery, "" if none
    connection_id: str
    item_id: str  # the user's message in the chat view (its om_ id)


def now_ms() -> int:
    """Wall-clock milliseconds, as Feishu timestamps are."""
    return int(time.time() * 1000)


def new_event_id() -> str:
    """32 hex characters, like `5e3702a84e847582be8db7fb73283c02`."""
    return secrets.token_hex(16)


def new_message_id() -> str:
    """An `om_` IM message id."""
    return "om_" + secrets.token_hex(16)


def user_ids(open_id: str) -> dict[str, str]:
    """The `{union_id, user_id, open_id}` triple of a user, stable per open_id."""
    return {
        "union_id": "on_" + stable_hex("union", open_id),
        "user_id": stable_hex("user", open_id, length=8),
        "open_id": open_id,
    }


def user_content(
    message_type: str, text: str, keys: list[str], names: list[str]
) -> tuple[dict[str, Any], str]:
    """(content, text as the user reads it) for a message typed by a user."""
    shown = " ".join(f"@{n}" for n in names)
    if message_type == "text":
        placeholders = " ".join(keys)
        body = f"{placeholders} {text}" if keys and "@_user_" not in text else text
        return {"text": body}, f"{shown} {text}".strip() if shown else text
    if message_type == "post":
        row: list[dict[str, Any]] = [
            {"tag": "at", "user_id": k, "user_name": n} for k, n in zip(keys, names, strict=True)
        ]
        row.append({"tag": "text", "text": text, "style": []})
        return {"title": "", "content": [row]}, f"{shown} {text}".strip() if shown else text
    if message_type == "image":
        return {"image_key": "img_v3_" + secrets.token_hex(12)}, text or "[image]"
    if message_type == "file":
        name = text or "document.pdf"
        return {"file_key": "file_v3_" + secrets.token_hex(12), "file_name": name}, name
    if message_type == "audio":
        return {"file_key": "file_v3_" + secrets.token_hex(12), "duration": 2000}, "[audio]"
    if message_type == "media":
        return {
            "file_key": "file_v3_" + secrets.token_hex(12),
            "image_key": "img_v3_" + secrets.token_hex(12),
            "file_name": text or "video.mp4",
            "duration": 5000,
        }, "[video]"
    if message_type == "sticker":
        return {"file_key": "file_v3_" + secrets.token_hex(12)}, "[sticker]"
    raise ValueError(f"no default content for {message_type!r}; pass content=")


def receive_event(
    app: FeishuApp,
    *,
    event_id: str,
    message_id: str,
    chat_id: str,
    chat_type: str,
    message_type: str,
    content: Mapping[str, Any],
    sender_open_id: str,
    mentions: Iterable[tuple[str, Mention]],
    create_time_ms: int,
    parent_id: str = "",
) -> dict[str, Any]:
    """The `im.message.receive_v1` envelope of docs/platforms/feishu.md §3.1."""
    tenant = app.effective_tenant_key
    message: dict[str, Any] = {
        "message_id": message_id,
        "create_time": str(create_time_ms),
        "update_time": str(create_time_ms),
        "chat_id": chat_id,
        "chat_type": chat_type,
        "message_type": message_type,
        "content": json.dumps(content, ensure_ascii=False),
    }
    if parent_id:
        message["root_id"] = parent_id
        message["parent_id"] = parent_id
    mention_list = [
        {"key": key, "id": user_ids(m.open_id), "name": m.name, "tenant_key": tenant}
        for key, m in mentions
    ]
    if mention_list:
        message["mentions"] = mention_list
    return {
        "schema": "2.0",
        "header": {
            "event_id": event_id,
            "event_type": RECEIVE_EVENT,
            "create_time": str(create_time_ms),
            "token": "",
            "app_id": app.app_id,
            "tenant_key": tenant,
        },
        "event": {
            "sender": {
                "sender_id": user_ids(sender_open_id),
                "sender_type": "user",
                "tenant_key": tenant,
            },
            "message": message,
        },
    }


def _post_text(post: Mapping[str, Any]) -> str:
    """The plain text of one locale of a post."""
    lines = []
    title = post.get("title")
    if isinstance(title, str) and title:
        lines.append(title)
    for row in post.get("content") or []:
        parts = []
        for node in row if isinstance(row, list) else []:
            if not isinstance(node, dict):
                continue
            if node.get("tag") in ("text", "md", "a", "code_block"):
                parts.append(str(node.get("text", "")))
            elif node.get("tag") == "at":
                parts.append("@" + str(node.get("user_name") or node.get("user_id", "")))
        lines.append("".join(parts))
    return "\n".join(lines)


def card_text(card: Mapping[str, Any]) -> str:
    """The readable text of a card JSON (markdown and plain_text elements, in order)."""
    texts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("tag") in ("markdown", "plain_text", "div") and isinstance(
                node.get("content"), str
            ):
                texts.append(node["content"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card.get("body", card.get("elements", [])))
    return "\n".join(texts)


def sent_text(msg_type: str, content: Mapping[str, Any]) -> str:
    """What a user reads for a message the bot sent."""
    if msg_type == "text":
        return str(content.get("text", ""))
    if msg_type == "post":
        post: Any = content.get("zh_cn") or content.get("en_us") or next(iter(content.values()), {})
        return _post_text(post) if isinstance(post, dict) else ""
    if msg_type == "interactive":
        return card_text(content)
    return f"[{msg_type}]"


def message_object(
    item_id: str,
    *,
    app: FeishuApp,
    chat_id: str,
    msg_type: str,
    content: str,
    parent_id: str,
    create_time_ms: int,
    thread_id: str = "",
) -> dict[str, Any]:
    """The `data` of a send or reply answer: Feishu's Message object."""
    data: dict[str, Any] = {
        "message_id": item_id,
        "root_id": parent_id,
        "parent_id": parent_id,
        "msg_type": msg_type,
        "create_time": str(create_time_ms),
        "update_time": str(create_time_ms),
        "deleted": False,
        "updated": False,
        "chat_id": chat_id,
        "sender": {
            "id": app.app_id,
            "id_type": "app_id",
            "sender_type": "app",
            "tenant_key": app.effective_tenant_key,
        },
        "body": {"content": content},
    }
    if thread_id:
        data["thread_id"] = thread_id
    return data
