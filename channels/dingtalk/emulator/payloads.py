"""Stream frames and bot messages as DingTalk sends them (docs/platforms/dingtalk.md §1.3, §2)."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from channels.dingtalk.emulator.state import EmulatorApp, stable_id
from channels.emulator.state import Delivered

BOT_MESSAGE_TOPIC = "/v1.0/im/bot/messages/get"
MSGTYPES = ("text", "richText", "audio", "picture", "file", "video")
MEDIA_MSGTYPES = ("audio", "file", "video")  # DingTalk delivers these only in single chats


def frame_message_id() -> str:
    """Shaped like DingTalk's `213d841d_972_1898bb26334_70a7`."""
    return "_".join(
        (
            secrets.token_hex(4),
            secrets.token_hex(2)[:3],
            secrets.token_hex(6)[:11],
            secrets.token_hex(2),
        )
    )


def make_frame(
    frame_type: str,
    topic: str,
    data: dict[str, Any],
    *,
    app_id: str = "",
    connection_id: str = "",
    message_id: str | None = None,
) -> dict[str, Any]:
    """A server frame: every header a string, `data` a JSON string."""
    headers = {
        "appId": app_id,
        "connectionId": connection_id,  # dropped below when empty, as in real CALLBACK frames
        "contentType": "application/json",
        "messageId": message_id or frame_message_id(),
        "time": str(int(time.time() * 1000)),
        "topic": topic,
    }
    if not connection_id:
        del headers["connectionId"]
    return {
        "specVersion": "1.0",
        "type": frame_type,
        "headers": headers,
        "data": json.dumps(data, ensure_ascii=False),
    }


def ping_frame(app_id: str, connection_id: str) -> dict[str, Any]:
    """SYSTEM ping; the client must echo `data` in its ack."""
    return make_frame(
        "SYSTEM", "ping", {"opaque": str(uuid.uuid4())}, app_id=app_id, connection_id=connection_id
    )


def disconnect_frame(reason: str) -> dict[str, Any]:
    """SYSTEM disconnect; the real one carries no appId/connectionId."""
    frame = make_frame("SYSTEM", "disconnect", {"reason": reason})
    del frame["headers"]["appId"]
    return frame


def lwcp_id(*parts: str) -> str:
    """DingTalk's encrypted user ids look like `$:LWCP_v1:$<base64>`."""
    return "$:LWCP_v1:$" + stable_id(*parts, length=32)


@dataclass(frozen=True, slots=True)
class UserMessage(Delivered):
    """What `send_user_message` did: the frame id and msgId to correlate acks and replies."""

    frame_message_id: str
    msg_id: str
    conversation_id: str
    connection_id: str
    session_webhook: str
    item_id: str  # the user's message in the chat view


def bot_message(
    app: EmulatorApp,
    *,
    corp_id: str,
    text: str,
    msgtype: str,
    conversation_type: str,
    conversation_id: str,
    conversation_title: str,
    sender_staff_id: str,
    sender_nick: str,
    mentioned: bool,
    at_staff_ids: list[str],
    session_webhook: str,
    session_expires_ms: int,
    create_at_ms: int,
    download_code: str | None,
    file_name: str,
    is_admin: bool,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """The decoded `data` of a `/v1.0/im/bot/messages/get` callback."""
    if msgtype not in MSGTYPES:
        raise ValueError(f"unsupported msgtype {msgtype!r}; expected one of {MSGTYPES}")
    if conversation_type not in ("1", "2"):
        raise ValueError("conversation_type must be '1' (single) or '2' (group)")
    bot_user_id = lwcp_id("bot", app.client_id)
    payload: dict[str, Any] = {
        "senderPlatform": "Mac",
        "conversationId": conversation_id,
        "chatbotCorpId": corp_id,
        "chatbotUserId": bot_user_id,
        "msgId": "msg" + stable_id(secrets.token_hex(8)) + "==",
        "senderNick": sender_nick,
        "isAdmin": is_admin,
        "senderStaffId": sender_staff_id,
        "sessionWebhookExpiredTime": session_expires_ms,
        "createAt": create_at_ms,
        "senderCorpId": corp_id,
        "conversationType": conversation_type,
        "senderId": lwcp_id("user", corp_id, sender_staff_id),
        "isInAtList": mentioned,
        "sessionWebhook": session_webhook,
        "robotCode": app.effective_robot_code,
        "msgtype": msgtype,
    }
    if conversation_type == "2":
        payload["conversationTitle"] = conversation_title
        payload["openThreadId"] = conversation_id
    at_users = [{"dingtalkId": bot_user_id}] if mentioned else []
    at_users += [{"dingtalkId": lwcp_id("user", corp_id, s), "staffId": s} for s in at_staff_ids]
    if at_users:
        payload["atUsers"] = at_users
    code = download_code or secrets.token_urlsafe(24)
    if msgtype == "text":
        # DingTalk strips the "@bot" from group text but leaves the space that followed it.
        content = f" {text}" if conversation_type == "2" and mentioned and text[:1] != " " else text
        payload["text"] = {"content": content}
    elif msgtype == "richText":
        parts: list[dict[str, Any]] = [{"text": text}]
        if download_code:
            parts.append({"pictureDownloadCode": code, "downloadCode": code, "type": "picture"})
        payload["content"] = {"richText": parts}
    elif msgtype == "audio":
        payload["content"] = {"duration": 4000, "downloadCode": code, "recognition": text}
    elif msgtype == "picture":
        payload["content"] = {"downloadCode": code, "pictureDownloadCode": code}
    elif msgtype == "video":
        payload["content"] = {"duration": 5000, "downloadCode": code, "videoType": "mp4"}
    else:
        payload["content"] = {
            "downloadCode": code,
            "fileName": file_name or "document.pdf",
            "spaceId": "2" + secrets.token_hex(5),
            "fileId": secrets.token_hex(6),
        }
    if extra:
        payload.update(extra)
    return payload
