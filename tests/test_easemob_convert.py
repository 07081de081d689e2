"""Easemob callbacks to `InboundMessage`s: both callbacks, both payload shapes, what is ignored
(docs/platforms/easemob.md §1)."""

from __future__ import annotations

from typing import Any

import pytest

from channels.easemob.convert import envelope, security, to_inbound, verdict
from channels.model import ChannelId, ChatType
from common.errors import PermanentError

BOT = "aibot"
CHANNEL = ChannelId("em-main")


def pre_send(text: str = "hi", **fields: Any) -> dict[str, Any]:
    """A pre-send callback's body (unsigned): flat payload, no eventType."""
    body: dict[str, Any] = {
        "callId": "org#app_5c1a2d3e-0000-4000-8000-000000000001",
        "timestamp": 1_700_000_000_000,
        "chat_type": "chat",
        "from": "u1",
        "to": BOT,
        "msg_id": "1234567890123456789",
        "payload": {"msg": text, "type": "txt"},
        "security": "",
    }
    return {**body, **fields}


def post_send(text: str = "hi", **fields: Any) -> dict[str, Any]:
    """A post-send callback's body (unsigned): `bodies` payload, eventType "chat"."""
    body = pre_send(
        eventType="chat",
        callId="org#app_1234567890123456789",
        payload={"ext": {}, "bodies": [{"msg": text, "type": "txt"}]},
        securityVersion="1.0.0",
        appkey="org#app",
        content_type="chat:user:text",
    )
    return {**body, **fields}


def convert(body: dict[str, Any]) -> Any:
    return to_inbound(CHANNEL, body, BOT)


def test_security_is_the_md5_of_call_id_secret_and_timestamp_in_that_order() -> None:
    # RFC 1321's test vector: md5("abc")
    assert security("a", "b", "c") == "900150983cd24fb0d6963f7d28e17f72"
    assert security("c", "s", "1600060847294") != security("s", "c", "1600060847294")


@pytest.mark.parametrize("make", [pre_send, post_send], ids=["pre-send", "post-send"])
def test_a_direct_message_to_the_bot_in_either_shape(make: Any) -> None:
    message = convert(make("  what is 2+2?\n"))
    assert message is not None
    assert (message.message_id, message.chat_id, message.chat_type) == (
        "1234567890123456789",
        "u1",
        ChatType.DIRECT,
    )
    assert message.text == "what is 2+2?"
    assert message.sender.platform_id == "u1"
    assert message.reply_handle == {"to": "u1"}
    assert message.bot_mentioned
    assert message.received_at.timestamp() == 1_700_000_000


def test_both_callbacks_of_one_message_name_it_alike() -> None:
    first, second = convert(pre_send()), convert(post_send())
    assert first is not None and second is not None
    assert first.message_id == second.message_id and first.text == second.text


def test_indentation_in_a_text_is_kept() -> None:
    message = convert(pre_send("def f():\n    return  1"))
    assert message is not None and message.text == "def f():\n    return  1"


@pytest.mark.parametrize(
    "fields",
    [
        {"from": BOT, "to": "u1"},
        {"from": BOT},
        {"to": "u2"},
        {"chat_type": "groupchat", "group_id": "169"},
        {"chat_type": "group"},
        {"chat_type": "chatroom"},
        {"chat_type": "edit"},
        {"from": ""},
        {"to": ["aibot"]},
        {"payload": {"msg": "", "type": "cmd", "action": "typing"}},
    ],
    ids=[
        "echo",
        "to-itself",
        "between-users",
        "groupchat",
        "group",
        "chatroom",
        "edit",
        "no-sender",
        "to-list",
        "command",
    ],
)
def test_what_is_not_a_user_talking_to_the_bot_is_ignored(fields: dict[str, Any]) -> None:
    assert convert(pre_send(**fields)) is None


def test_media_bodies_become_notes_for_the_agent() -> None:
    bodies = [
        {"type": "img", "url": "https://x/img", "filename": "cat.png", "secret": "s"},
        {"type": "txt", "msg": "look"},
        {"type": "loc", "lat": 1, "lng": 2, "addr": "here"},
        {"type": "weird"},
    ]
    message = convert(post_send(payload={"bodies": bodies}))
    assert message is not None
    assert message.text.startswith("look\n[The user sent an image named 'cat.png'")
    assert [a.kind for a in message.attachments] == [
        "picture",
        "location",
        "weird message",
    ]
    assert message.attachments[0].handle == "https://x/img"


def test_a_64_bit_integer_msg_id_is_kept_exact() -> None:
    message = convert(pre_send(msg_id=1_234_567_890_123_456_789_0))
    assert message is not None and message.message_id == "12345678901234567890"


@pytest.mark.parametrize(
    "fields",
    [
        {"msg_id": None},
        {"msg_id": ""},
        {"msg_id": 1.5},
        {"payload": "text"},
        {"payload": {"bodies": []}},
        {"payload": {"bodies": "x"}},
        {"payload": {"bodies": ["x"]}},
        {"payload": {"type": "txt", "msg": 5}},
    ],
)
def test_an_unreadable_message_to_the_bot_is_an_error(fields: dict[str, Any]) -> None:
    with pytest.raises(PermanentError):
        convert(pre_send(**fields))


@pytest.mark.parametrize(
    ("fields", "readable"),
    [
        ({}, True),
        ({"timestamp": "1700000000000"}, True),
        ({"timestamp": 1.7e12}, False),
        ({"timestamp": True}, False),
        ({"timestamp": "-1"}, False),
        ({"timestamp": "１２３"}, False),  # full-width digits: not what Easemob sends
        ({"callId": ""}, False),
        ({"callId": 5}, False),
        ({"security": None}, False),
    ],
)
def test_the_signed_fields(fields: dict[str, Any], readable: bool) -> None:
    signed = envelope(pre_send(**fields))
    assert (signed is not None) == readable
    if signed is not None:
        assert signed.pre_send and signed.milliseconds == 1_700_000_000_000
        assert signed.timestamp == "1700000000000"


def test_the_post_send_callback_is_told_apart_by_its_event_type() -> None:
    signed = envelope(post_send())
    assert signed is not None and not signed.pre_send and signed.event_type == "chat"


def test_the_verdict_delivers_every_message_for_now() -> None:
    assert verdict(convert(pre_send())) == {"valid": True}
    assert verdict(None) == {"valid": True}
