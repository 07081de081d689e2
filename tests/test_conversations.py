"""Conversation keys: one per direct chat, one per group member unless the group shares context."""

from __future__ import annotations

from datetime import UTC, datetime

from channels.conversations import conversation_key
from channels.handler import command_of
from channels.model import ChannelId, ChatType, InboundMessage, Sender


def message(chat_type: ChatType, sender: str, chat: str = "cid-1") -> InboundMessage:
    return InboundMessage(
        channel_id=ChannelId("dt"),
        platform="dingtalk",
        message_id="m1",
        chat_id=chat,
        chat_type=chat_type,
        sender=Sender(sender),
        text="hi",
        received_at=datetime.now(UTC),
    )


def test_direct_chats_have_one_conversation_per_chat() -> None:
    assert conversation_key(message(ChatType.DIRECT, "u1"), "per_user") == "direct:cid-1"
    assert conversation_key(message(ChatType.DIRECT, "u1", "cid-2"), "per_user") == "direct:cid-2"


def test_groups_are_per_member_by_default_and_shared_on_request() -> None:
    alice = message(ChatType.GROUP, "alice")
    bob = message(ChatType.GROUP, "bob")
    assert conversation_key(alice, "per_user") != conversation_key(bob, "per_user")
    assert conversation_key(alice, "shared") == conversation_key(bob, "shared") == "group:cid-1"


def test_commands_are_recognised_only_at_the_start() -> None:
    assert command_of("/new") == ("/new", "")
    assert command_of("  /NEW tell me a joke") == ("/new", "tell me a joke")
    assert command_of("/help") == ("/help", "")
    assert command_of("/stop") == ("/stop", "")
    assert command_of("what does /new do?") == ("", "what does /new do?")
    assert command_of("/unknown thing") == ("", "/unknown thing")
