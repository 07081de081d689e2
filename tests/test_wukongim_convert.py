"""WuKongIM `msg.notify` items (docs/platforms/wukongim.md §1) to InboundMessage, and the
callback's query string."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from channels.model import ChannelId, ChatType, InboundMessage, inbound_from_json, inbound_to_json
from channels.wukongim.convert import query_params, to_batch, to_inbound
from common.errors import PermanentError

BOT = "aibot"
CHANNEL = ChannelId("wk-main")
BIG_ID = 1834567890123456789  # above 2**53: a float would round it


def payload(body: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(body, ensure_ascii=False).encode()).decode()


def item(content: Any = "hi", **fields: Any) -> dict[str, Any]:
    body = content if isinstance(content, dict) else {"type": 1, "content": content}
    base: dict[str, Any] = {
        "header": {"no_persist": 0, "red_dot": 1, "sync_once": 0},
        "setting": 0,
        "message_id": BIG_ID,
        "message_idstr": str(BIG_ID),
        "client_msg_no": "c1b2",
        "message_seq": 42,
        "from_uid": "u1",
        "channel_id": BOT,
        "channel_type": 1,
        "expire": 0,
        "timestamp": 1718000000,
        "payload": payload(body),
    }
    base.update(fields)
    return base


def group_item(text: str, mention: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": 1, "content": text}
    if mention is not None:
        body["mention"] = mention
    return item(body, channel_id="g1", channel_type=2, **fields)


def convert(data: Any) -> InboundMessage | None:
    return to_inbound(CHANNEL, data, BOT)


def converted(data: Any) -> InboundMessage:
    message = convert(data)
    assert message is not None
    return message


def test_a_direct_message_is_from_its_sender_and_answered_in_their_channel() -> None:
    msg = converted(item(" hello there "))
    assert msg.chat_type is ChatType.DIRECT
    assert msg.chat_id == "u1"
    assert msg.sender.platform_id == "u1"
    assert msg.text == "hello there"
    assert msg.bot_mentioned
    assert msg.message_id == str(BIG_ID)
    assert msg.received_at.timestamp() == 1718000000  # seconds, not milliseconds
    assert msg.reply_handle == {"channel_id": "u1", "channel_type": 1}


def test_a_group_message_mentioning_the_bot_is_for_it_and_loses_the_mention() -> None:
    msg = converted(group_item("@aibot what now?", {"all": 0, "uids": ["u7", BOT]}))
    assert msg.chat_type is ChatType.GROUP
    assert msg.chat_id == "g1"
    assert msg.bot_mentioned
    assert msg.text == "what now?"
    assert msg.reply_handle == {"channel_id": "g1", "channel_type": 2}


@pytest.mark.parametrize(
    "mention",
    [None, {"all": 0, "uids": ["u7"]}, {"all": 1}, {"all": 1, "uids": []}, {"uids": "aibot"}],
    ids=["none", "someone-else", "all", "all-empty-uids", "uids-not-a-list"],
)
def test_a_group_message_not_naming_the_bot_is_not_a_question_to_it(
    mention: dict[str, Any] | None,
) -> None:
    msg = converted(group_item("chatter", mention))
    assert msg.chat_type is ChatType.GROUP
    assert not msg.bot_mentioned


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"from_uid": BOT}, "the bot's own message echoed back"),
        ({"from_uid": BOT, "channel_id": "u1"}, "the bot's answer in a user's channel"),
        ({"from_uid": ""}, "a system message"),
        ({"from_uid": None}, "no sender at all"),
        ({"channel_id": "u2"}, "two users talking to each other"),
        ({"channel_type": 3}, "a customer-service channel"),
        ({"channel_type": 11}, "an agent channel"),
        ({"channel_type": "1"}, "a channel type that is not a number"),
    ],
)
def test_what_is_not_for_the_bot_is_ignored(fields: dict[str, Any], why: str) -> None:
    assert convert(item(**fields)) is None, why


def test_command_messages_are_ignored() -> None:
    assert convert(item({"type": 99, "cmd": "clearUnread", "param": {}})) is None


def test_the_id_is_the_string_form_and_falls_back_to_the_exact_integer() -> None:
    # parsed from the wire like the listener does: Python keeps JSON integers exact
    raw = json.dumps(item()).replace(f'"message_idstr": "{BIG_ID}", ', "")
    data = json.loads(raw)
    assert "message_idstr" not in data
    assert converted(data).message_id == str(BIG_ID)
    assert str(BIG_ID) != str(int(float(BIG_ID)))  # what a float would have made of it


@pytest.mark.parametrize(
    "fields",
    [
        {"message_idstr": "", "message_id": float(BIG_ID)},
        {"message_idstr": "", "message_id": True},
        {"message_idstr": None, "message_id": None},
        {"payload": ""},
        {"payload": "not base64!"},
        {"payload": base64.b64encode(b"not json").decode()},
        {"payload": base64.b64encode(b"[1, 2]").decode()},
        {"payload": payload({"type": 1, "content": 5})},
    ],
    ids=["float-id", "bool-id", "no-id", "empty", "not-base64", "not-json", "array", "no-text"],
)
def test_an_unreadable_message_is_a_permanent_error(fields: dict[str, Any]) -> None:
    with pytest.raises(PermanentError):
        convert(item(**fields))


def test_an_item_that_is_no_object_is_unreadable() -> None:
    with pytest.raises(PermanentError):
        convert(["not", "an", "object"])


@pytest.mark.parametrize(
    ("body", "kind", "described"),
    [
        ({"type": 2, "url": "http://x/1.png", "width": 1, "height": 1}, "picture", "an image"),
        ({"type": 4, "url": "http://x/v.amr", "timeTrad": 3}, "audio", "a voice message"),
        ({"type": 5, "url": "http://x/v.mp4"}, "video", "a video"),
        ({"type": 8, "url": "http://x/r.pdf", "name": "report.pdf"}, "file", "'report.pdf'"),
        ({"type": 42}, "type 42 message", "a type 42 message attachment"),
        ({"content": "no type"}, "type ? message", "a type ? message attachment"),
    ],
)
def test_what_is_not_text_becomes_an_attachment_the_agent_is_told_of(
    body: dict[str, Any], kind: str, described: str
) -> None:
    msg = converted(item(body))
    assert [a.kind for a in msg.attachments] == [kind]
    assert described in msg.text
    assert "cannot be shown to you" in msg.text


def test_a_batch_skips_and_counts_what_it_cannot_read_and_keeps_the_rest() -> None:
    items = [
        item("one", message_idstr="1"),
        item(from_uid=BOT, message_idstr="2"),
        item(payload="%%%", message_idstr="3"),
        "garbage",
        item("four", message_idstr="4", from_uid="u4"),
        group_item("five", {"uids": [BOT]}, message_idstr="5"),
    ]
    batch = to_batch(CHANNEL, items, BOT)
    assert [m.message_id for m in batch.messages] == ["1", "4", "5"]
    assert [m.text for m in batch.messages] == ["one", "four", "five"]
    assert batch.ignored == 1
    assert batch.malformed == 2


def test_a_message_survives_the_journal() -> None:
    msg = converted(group_item("@aibot hi", {"uids": [BOT]}))
    assert inbound_from_json(inbound_to_json(msg)) == msg


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("event=msg.notify", {"event": "msg.notify"}),
        ("key=K1?event=msg.notify", {"key": "K1", "event": "msg.notify"}),  # v2.2.5
        ("key=K1&event=msg.notify", {"key": "K1", "event": "msg.notify"}),  # newer servers
        ("event=msg.notify&key=K1", {"key": "K1", "event": "msg.notify"}),
        ("key=a%2Db&event=user.onlinestatus", {"key": "a-b", "event": "user.onlinestatus"}),
        ("key=first&key=second", {"key": "first"}),
        ("", {}),
    ],
)
def test_the_query_is_read_whichever_way_the_server_built_it(
    raw: str, expected: dict[str, str]
) -> None:
    assert query_params(raw) == expected
