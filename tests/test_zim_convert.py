"""ZIM callbacks (docs/platforms/zim.md §1) to InboundMessage, the two signatures against the
reference's checked vectors, and the config's robot id rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from channels.model import ChannelId, ChatType, InboundMessage, inbound_from_json, inbound_to_json
from channels.zim.api import api_signature
from channels.zim.config import ZimChannelConfig
from channels.zim.convert import callback_signature, to_inbound, url_decoded
from common.errors import PermanentError

ROBOT = "@RBT#assistant"
CHANNEL = ChannelId("zim-main")


def callback(event: str = "bot_msg", **fields: Any) -> dict[str, Any]:
    """A callback as ZEGO's documentation shows it (signature fields are the provider's)."""
    base: dict[str, Any] = {
        "appid": "1234567890",
        "event": event,
        "nonce": "350176",
        "signature": "unchecked here",
        "timestamp": 1679553625,
        "from_user_id": "user_1",
        "conv_type": 0,
        "conv_id": ROBOT if event == "send_msg" else "",
        "msg_type": 1,
        "msg_body": "hello",
        "msg_id": "857639062792568832",
        "payload": "",
        "msg_time": 1679554146000,
        "send_result": 0,
        "sub_msg_type": 0,
        "user_list": [],
    }
    base.update(fields)
    return base


def convert(payload: dict[str, Any]) -> InboundMessage | None:
    return to_inbound(CHANNEL, payload, ROBOT)


def converted(payload: dict[str, Any]) -> InboundMessage:
    message = convert(payload)
    assert message is not None
    return message


def test_signature_vectors_from_the_reference() -> None:
    # webhook-platforms.md §1.1.1 and §1.2, both recomputed there with hashlib
    assert (
        callback_signature("secret", "1470820198", "123412")
        == "5bd59fd62953a8059fb7eaba95720f66d19e4517"
    )
    assert (
        api_signature(12345, "4fd24687296dd9f3", "9193cc662a4c0ec135ec71fb57194b38", 1615186943)
        == "43e5cfcca828314675f91b001390566a"
    )


@pytest.mark.parametrize("event", ["bot_msg", "send_msg"])
def test_a_users_text_to_the_robot(event: str) -> None:
    message = converted(callback(event))
    assert message.message_id == "857639062792568832"  # the same key from either callback
    assert (message.chat_id, message.chat_type) == ("user_1", ChatType.DIRECT)
    assert message.sender.platform_id == "user_1"
    assert message.text == "hello"
    assert message.bot_mentioned
    assert message.reply_handle == {"user_id": "user_1"}
    assert message.received_at.timestamp() == 1679554146.0
    assert inbound_from_json(inbound_to_json(message)) == message


def test_bot_msg_naming_the_robot_is_taken_too() -> None:
    assert converted(callback("bot_msg", conv_id=ROBOT)).text == "hello"


@pytest.mark.parametrize(
    "fields",
    [
        {"source": 1, "from_user_id": ROBOT, "conv_id": ""},  # the robot's send, echoed
        {"source": 1},  # anything the server API sent
        {"from_user_id": ROBOT},  # the robot's own, whatever the source
        {"conv_type": 2, "conv_id": "group-1"},  # a group
        {"conv_type": 1, "conv_id": "room-1"},  # a room
        {"conv_id": "user_2"},  # two users talking
        {"conv_id": "@RBT#other"},  # another robot
        {"conv_id": ""},  # send_msg without a robot: a server-API one-to-one send
        {"send_result": 660400001},  # not delivered
        {"from_user_id": ""},
    ],
)
def test_what_is_not_a_users_message_to_the_robot_is_ignored(fields: dict[str, Any]) -> None:
    assert convert(callback("send_msg", **fields)) is None


@pytest.mark.parametrize("event", ["before_send_msg", "user_state", ""])
def test_other_events_are_ignored(event: str) -> None:
    assert convert(callback(event)) is None


def test_url_encoded_bodies_are_decoded_and_plain_ones_kept() -> None:
    encoded = "%E4%BD%A0%E5%A5%BD%2C+what+is+100%25%3F"
    assert converted(callback(msg_body=encoded)).text == "你好, what is 100%?"
    for plain in ["50% off", "a+b", "100%", "%ZZ", "你好 %E4", "c++ is 2x"]:
        assert url_decoded(plain) == plain
    assert url_decoded("%FF%FE") == "%FF%FE"  # not UTF-8 once decoded: kept as sent


def test_other_message_types_are_described_to_the_agent() -> None:
    image = converted(callback(msg_type=11, msg_body="%7B%22fileName%22%3A%22cat.png%22%7D"))
    assert (
        image.text == "[The user sent an image named 'cat.png', which cannot be shown to you here.]"
    )
    assert image.attachments[0].kind == "picture"
    custom = converted(callback(msg_type=200, msg_body="{not json"))
    assert "custom message" in custom.text
    unknown = converted(callback(msg_type=77))
    assert "type 77 message" in unknown.text


def test_integer_msg_id_is_kept_exactly() -> None:
    assert converted(callback(msg_id=857639062792568833)).message_id == "857639062792568833"


@pytest.mark.parametrize("msg_id", [None, "", 1.5, True, []])
def test_a_message_without_a_usable_msg_id_is_unreadable(msg_id: Any) -> None:
    with pytest.raises(PermanentError):
        convert(callback(msg_id=msg_id))


def test_a_non_string_body_is_unreadable() -> None:
    with pytest.raises(PermanentError):
        convert(callback(msg_body={"text": "hi"}))


def config(**fields: Any) -> ZimChannelConfig:
    base: dict[str, Any] = {"id": "zim-main", "app_id": 1234567890, "server_secret": "s3cret"}
    return ZimChannelConfig(**(base | fields))


def test_robot_id_rules() -> None:
    assert config(robot_id="@RBT#assistant").robot_id == "@RBT#assistant"
    assert config(robot_id="@RBT#" + "a" * 27).robot_id  # 32 bytes
    for bad in ["assistant", "@RBT#" + "a" * 28, "@RBT#名字", "@RBT#a/b", "@RBT#"]:
        with pytest.raises(ValidationError):
            config(robot_id=bad)


def test_config_defaults_and_refusals() -> None:
    default = config(robot_id=ROBOT)
    assert (default.api_base, default.max_message_bytes, default.stream) == (
        "https://zim-api.zego.im",
        2000,
        "edit",
    )
    bad_fields: list[dict[str, Any]] = [
        {"server_secret": ""},
        {"stream": "cards"},
        {"app_id": 0},
        {"api_base": "ftp://x"},
        {"unknown": 1},
    ]
    for bad in bad_fields:
        with pytest.raises(ValidationError):
            config(robot_id=ROBOT, **bad)
