"""DingTalk bot-message payloads (docs/platforms/dingtalk.md §2) to `InboundMessage`."""

from __future__ import annotations

from typing import Any

from dingtalk_stream import ChatbotMessage

from channels.convert import squeeze_spaces, timestamp_ms, with_notes
from channels.model import Attachment, ChannelId, ChatType, InboundMessage, Sender
from common.errors import PermanentError

PLATFORM = "dingtalk"


def _strip_mention(text: str, nick: str | None) -> str:
    """DingTalk leaves the '@BotName' text (or a leading space where it was) in group messages."""
    return squeeze_spaces(text.replace(f"@{nick}", "") if nick else text)


def _text_and_attachments(payload: dict[str, Any], msg: Any) -> tuple[str, list[Attachment]]:
    kind = payload.get("msgtype", "")
    raw_content = payload.get("content")
    content: dict[str, Any] = raw_content if isinstance(raw_content, dict) else {}
    if kind == "text":
        return str(msg.text.content or ""), []
    if kind == "richText":
        parts: list[str] = []
        attachments: list[Attachment] = []
        for item in content.get("richText") or []:
            if not isinstance(item, dict):
                continue
            if "text" in item:
                parts.append(str(item["text"]))
            elif item.get("type") == "picture" or "downloadCode" in item:
                attachments.append(Attachment("picture", handle=str(item.get("downloadCode", ""))))
        return "".join(parts), attachments
    if kind == "audio":
        recognition = str(content.get("recognition") or "")
        if recognition:
            return recognition, []
        return "", [Attachment("audio", handle=str(content.get("downloadCode", "")))]
    if kind in {"picture", "file", "video"}:
        handle = str(content.get("downloadCode") or content.get("pictureDownloadCode") or "")
        return "", [Attachment(kind, name=str(content.get("fileName", "")), handle=handle)]
    return "", [Attachment(kind or "unknown")]


def to_inbound(
    channel_id: ChannelId, payload: dict[str, Any], frame_id: str, bot_nick: str = ""
) -> InboundMessage:
    """Parse one `/v1.0/im/bot/messages/get` payload; PermanentError when it is unusable."""
    for key in ("msgId", "conversationId", "msgtype"):
        if not isinstance(payload.get(key), str) or not payload[key]:
            raise PermanentError(f"bot message without a string {key}")
    try:
        msg = ChatbotMessage.from_dict(payload)
        text, attachments = _text_and_attachments(payload, msg)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise PermanentError(f"malformed bot message: {type(exc).__name__}") from exc
    chat_type = ChatType.GROUP if str(msg.conversation_type) == "2" else ChatType.DIRECT
    text = _strip_mention(text, bot_nick) if chat_type is ChatType.GROUP else text.strip()
    sender_key = msg.sender_staff_id or msg.sender_id or ""
    extra = {
        k: str(v)
        for k, v in {
            "staff_id": msg.sender_staff_id,
            "sender_id": msg.sender_id,
            "corp_id": msg.sender_corp_id,
        }.items()
        if v
    }
    reply_handle: dict[str, Any] = {
        "session_webhook": msg.session_webhook or "",
        "session_webhook_expires_ms": int(msg.session_webhook_expired_time or 0),
        "conversation_type": "2" if chat_type is ChatType.GROUP else "1",
        "conversation_id": msg.conversation_id,
        "sender_staff_id": msg.sender_staff_id or "",
        "sender_nick": msg.sender_nick or "",
        "robot_code": msg.robot_code or "",
    }
    return InboundMessage(
        channel_id=channel_id,
        platform=PLATFORM,
        message_id=str(msg.message_id),
        chat_id=str(msg.conversation_id),
        chat_type=chat_type,
        sender=Sender(
            platform_id=str(sender_key), display_name=msg.sender_nick or "", extra_ids=extra
        ),
        text=with_notes(text, attachments),
        received_at=timestamp_ms(payload.get("createAt")),
        attachments=tuple(attachments),
        # DingTalk pushes group messages only when the bot is @-mentioned; isInAtList says so
        bot_mentioned=chat_type is ChatType.DIRECT or bool(msg.is_in_at_list),
        frame_id=frame_id,
        reply_handle=reply_handle,
        tenant=str(msg.sender_corp_id or msg.chatbot_corp_id or ""),
    )
