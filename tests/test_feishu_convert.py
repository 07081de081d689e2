"""`im.message.receive_v1` events to InboundMessage: chats, mentions, content types, bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.feishu.convert import to_inbound
from channels.model import ChannelId, ChatType
from common.errors import PermanentError

BOT = "ou_bot"
CHANNEL = ChannelId("fs")


def event(
    content: dict[str, Any] | str,
    *,
    message_type: str = "text",
    chat_type: str = "p2p",
    mentions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "schema": "2.0",
        "header": {
            "event_id": "ev-1",
            "event_type": "im.message.receive_v1",
            "create_time": "1608725989000",
            "app_id": "cli_0123456789abcdef",
            "tenant_key": "tenant-1",
        },
        "event": {
            "sender": {
                "sender_id": {"open_id": "ou_user", "union_id": "on_user", "user_id": "u1"},
                "sender_type": "user",
                "tenant_key": "tenant-1",
            },
            "message": {
                "message_id": "om_1",
                "create_time": "1609073151345",
                "chat_id": "oc_1",
                "chat_type": chat_type,
                "message_type": message_type,
                "content": content if isinstance(content, str) else json.dumps(content),
                "mentions": mentions or [],
            },
        },
    }


def mention(key: str, open_id: str, name: str) -> dict[str, Any]:
    return {"key": key, "id": {"open_id": open_id, "union_id": "on_x"}, "name": name}


def test_a_direct_text_message() -> None:
    message = to_inbound(CHANNEL, event({"text": "hello there"}), BOT)
    assert message.text == "hello there"
    assert message.chat_type is ChatType.DIRECT and message.bot_mentioned
    assert (message.message_id, message.frame_id, message.chat_id) == ("om_1", "ev-1", "oc_1")
    assert message.sender.platform_id == "ou_user"
    assert message.sender.extra_ids == {"union_id": "on_user", "user_id": "u1"}
    assert message.tenant == "tenant-1"
    assert message.received_at.year == 2020
    assert message.reply_handle["message_id"] == "om_1"


def test_group_mention_of_the_bot_is_stripped_and_other_people_are_named() -> None:
    mentions = [mention("@_user_1", BOT, "Bot"), mention("@_user_2", "ou_tom", "Tom")]
    message = to_inbound(
        CHANNEL,
        event({"text": "@_user_1 ask @_user_2 about it"}, chat_type="group", mentions=mentions),
        BOT,
    )
    assert message.bot_mentioned
    assert message.text == "ask @Tom about it"


def test_group_message_mentioning_someone_else_is_not_for_the_bot() -> None:
    mentions = [mention("@_user_1", "ou_tom", "Tom")]
    message = to_inbound(
        CHANNEL, event({"text": "@_user_1 hi"}, chat_type="group", mentions=mentions), BOT
    )
    assert not message.bot_mentioned


def test_without_the_bots_identity_any_group_mention_counts() -> None:
    mentions = [mention("@_user_1", "ou_someone", "Bot?")]
    message = to_inbound(
        CHANNEL, event({"text": "@_user_1 hi"}, chat_type="group", mentions=mentions), ""
    )
    assert message.bot_mentioned
    plain = to_inbound(CHANNEL, event({"text": "hi all"}, chat_type="group"), "")
    assert not plain.bot_mentioned


def test_placeholder_keys_do_not_eat_longer_ones() -> None:
    mentions = [mention("@_user_1", BOT, "Bot"), mention("@_user_10", "ou_ten", "Ten")]
    message = to_inbound(
        CHANNEL,
        event({"text": "@_user_1 hi @_user_10"}, chat_type="group", mentions=mentions),
        BOT,
    )
    assert message.text == "hi @Ten"


def test_a_post_is_flattened_to_text_with_its_pictures_described() -> None:
    post = {
        "title": "Weekly",
        "content": [
            [{"tag": "text", "text": "see "}, {"tag": "a", "text": "docs", "href": "https://x"}],
            [{"tag": "img", "image_key": "img_1"}],
            [{"tag": "code_block", "language": "PYTHON", "text": "print(1)"}],
        ],
    }
    message = to_inbound(CHANNEL, event(post, message_type="post"), BOT)
    assert message.text.startswith("Weekly\nsee [docs](https://x)")
    assert "```python\nprint(1)\n```" in message.text
    assert "[The user sent an image" in message.text
    assert [a.handle for a in message.attachments] == ["img_1"]


@pytest.mark.parametrize(
    ("message_type", "content", "kind", "told"),
    [
        ("image", {"image_key": "img_9"}, "picture", "an image"),
        ("file", {"file_key": "f_9", "file_name": "a.pdf"}, "file", "a file named 'a.pdf'"),
        ("audio", {"file_key": "f_8", "duration": 2000}, "audio", "a voice message"),
        ("media", {"file_key": "f_7", "image_key": "i"}, "video", "a video"),
        ("share_chat", {"chat_id": "oc_x"}, "share_chat message", "a share_chat message"),
    ],
)
def test_media_and_unknown_types_are_described_to_the_agent(
    message_type: str, content: dict[str, Any], kind: str, told: str
) -> None:
    message = to_inbound(CHANNEL, event(content, message_type=message_type), BOT)
    assert message.attachments[0].kind == kind
    assert f"[The user sent {told}" in message.text


@pytest.mark.parametrize(
    "breakage",
    [
        lambda e: e["event"]["message"].pop("message_id"),
        lambda e: e["event"]["message"].update(chat_id=7),
        lambda e: e["header"].pop("event_id"),
        lambda e: e["event"]["sender"]["sender_id"].pop("open_id"),
        lambda e: e["event"]["message"].update(content="{not json"),
        lambda e: e["event"]["message"].update(content='["a list"]'),
        lambda e: e["event"]["message"].update(content={"text": "not a string"}),
    ],
)
def test_malformed_events_are_permanent_errors(breakage: Any) -> None:
    broken = event({"text": "hi"})
    breakage(broken)
    with pytest.raises(PermanentError):
        to_inbound(CHANNEL, broken, BOT)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(
        [
            ("header",),
            ("event",),
            ("event", "message"),
            ("event", "sender"),
            ("event", "message", "mentions"),
            ("event", "message", "content"),
            ("event", "message", "create_time"),
            ("event", "message", "chat_type"),
            ("event", "sender", "sender_id"),
        ]
    ),
    value=json_values,
    text=st.text(max_size=2000),
)
def test_any_damage_gives_a_message_or_a_permanent_error(
    field: tuple[str, ...], value: Any, text: str
) -> None:
    damaged = event({"text": text})
    node = damaged
    for key in field[:-1]:
        node = node[key]
    node[field[-1]] = value
    try:
        message = to_inbound(CHANNEL, damaged, BOT)
    except PermanentError:
        return
    assert isinstance(message.text, str)
