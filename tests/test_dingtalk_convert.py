"""DingTalk bot-message payloads (docs/platforms/dingtalk.md §2) to InboundMessage."""

from __future__ import annotations

from typing import Any

import pytest

from channels.dingtalk.convert import to_inbound
from channels.model import ChannelId, ChatType, inbound_from_json, inbound_to_json
from common.errors import PermanentError


def payload(msgtype: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "conversationId": "cidAsXSBLnA==",
        "conversationType": "1",
        "msgId": "msgLICYe1==",
        "msgtype": msgtype,
        "senderId": "$:LWCP_v1:$abc",
        "senderStaffId": "manager807",
        "senderNick": "Ada",
        "senderCorpId": "dingc53",
        "chatbotUserId": "$:LWCP_v1:$bot",
        "isInAtList": True,
        "createAt": 1769851697611,
        "sessionWebhook": "http://127.0.0.1:1/robot/sendBySession?session=s1",
        "sessionWebhookExpiredTime": 1769857097744,
        "robotCode": "ding-robot",
    }
    base.update(fields)
    return base


def convert(data: dict[str, Any]) -> Any:
    return to_inbound(ChannelId("dt"), data, "frame-1")


def test_text_direct_message() -> None:
    msg = convert(payload("text", text={"content": " hi there "}))
    assert msg.text == "hi there"
    assert msg.chat_type is ChatType.DIRECT
    assert msg.bot_mentioned
    assert msg.sender.platform_id == "manager807"
    assert msg.sender.display_name == "Ada"
    assert msg.tenant == "dingc53"
    assert msg.message_id == "msgLICYe1=="
    assert msg.frame_id == "frame-1"
    assert msg.reply_handle["session_webhook_expires_ms"] == 1769857097744


def test_group_message_carries_the_mention_flag() -> None:
    mentioned = convert(payload("text", text={"content": " what now"}, conversationType="2"))
    assert mentioned.chat_type is ChatType.GROUP
    assert mentioned.bot_mentioned and mentioned.text == "what now"
    plain = convert(
        payload("text", text={"content": "chatter"}, conversationType="2", isInAtList=False)
    )
    assert not plain.bot_mentioned


def test_rich_text_keeps_its_text_parts_and_reports_pictures() -> None:
    rich = {
        "richText": [
            {"text": "look at "},
            {"type": "picture", "downloadCode": "dc1"},
            {"text": "this"},
        ]
    }
    msg = convert(payload("richText", content=rich))
    assert msg.text.startswith("look at this")
    assert "an image" in msg.text
    assert [a.kind for a in msg.attachments] == ["picture"]


def test_audio_uses_the_recognition() -> None:
    msg = convert(
        payload(
            "audio",
            content={"duration": 4000, "downloadCode": "dc", "recognition": "钉钉，让进步发生"},
        )
    )
    assert msg.text == "钉钉，让进步发生"


@pytest.mark.parametrize(
    ("msgtype", "content", "told"),
    [
        ("picture", {"downloadCode": "dc", "pictureDownloadCode": "pdc"}, "an image"),
        ("file", {"downloadCode": "dc", "fileName": "report.pdf"}, "a file named 'report.pdf'"),
        ("video", {"downloadCode": "dc", "videoType": "mp4"}, "a video"),
        ("audio", {"downloadCode": "dc"}, "a voice message"),
        ("interactiveCard", {"x": 1}, "a interactiveCard attachment"),
    ],
)
def test_media_is_described_to_the_agent_not_dropped(
    msgtype: str, content: dict[str, Any], told: str
) -> None:
    msg = convert(payload(msgtype, content=content))
    assert told in msg.text
    assert msg.attachments


@pytest.mark.parametrize(
    "broken",
    [
        {"msgtype": "text"},  # no ids
        payload("text"),  # text type without a text object
        payload("text", text={"content": "x"}, msgId=""),
        payload("text", text={"content": "x"}, sessionWebhookExpiredTime="soon"),
    ],
)
def test_malformed_payloads_are_classified(broken: dict[str, Any]) -> None:
    with pytest.raises(PermanentError):
        convert(broken)


def test_journal_round_trip() -> None:
    msg = convert(payload("file", content={"downloadCode": "dc", "fileName": "a.txt"}))
    assert inbound_from_json(inbound_to_json(msg)) == msg
