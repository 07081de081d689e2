"""Hostile bot-message payloads: the parser either converts or classifies, never crashes, and
whatever it converts the journal can store (on a real SQLite database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channels import normalize
from channels.dingtalk.convert import to_inbound
from channels.model import ChannelId, InboundMessage
from common.errors import PermanentError
from tests.hostile_support import hostile_text, journal_converted

FIELDS = [
    "msgId", "conversationId", "conversationType", "msgtype", "text", "content", "senderId",
    "senderStaffId", "senderNick", "senderCorpId", "isInAtList", "atUsers", "createAt",
    "sessionWebhook", "sessionWebhookExpiredTime", "robotCode", "hostingContext",
    "conversationMsgContext", "chatbotCorpId",
]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text()
    | hostile_text,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=12)
plausible = st.fixed_dictionaries(
    {
        "msgId": st.text(min_size=1),
        "conversationId": st.text(min_size=1),
        "conversationType": st.sampled_from(["1", "2", 1, 2, "x"]),
        "msgtype": st.sampled_from(["text", "richText", "audio", "picture", "file", "video", "?"]),
    },
    optional={
        "text": json_values,
        "content": json_values,
        "createAt": json_values | st.integers(min_value=-(10**40), max_value=10**40),
        "sessionWebhookExpiredTime": json_values,
        "atUsers": json_values,
        "isInAtList": json_values,
        "senderStaffId": json_values,
    },
)


def check(payload: dict[str, Any]) -> None:
    try:
        message = to_inbound(ChannelId("dt"), payload, "frame")
    except PermanentError:
        return
    assert isinstance(message, InboundMessage)
    assert isinstance(message.text, str)


# derandomized: CI runs the same 300 cases every time; widen locally with more examples
@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@example({"msgId": True, "conversationId": True, "msgtype": []})
@given(payloads)
def test_arbitrary_payloads_never_crash_the_parser(payload: dict[str, Any]) -> None:
    check(payload)


# derandomized: CI runs the same 300 cases every time; widen locally with more examples
@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@example({"msgId": "m", "conversationId": "c", "conversationType": "1", "msgtype": "text",
          "text": {"content": "x"}, "createAt": 10**30})  # fmt: skip
@example({"msgId": "m", "conversationId": "c", "conversationType": "1", "msgtype": "audio",
          "sessionWebhookExpiredTime": float("inf")})  # fmt: skip
@given(plausible)
def test_nearly_valid_payloads_never_crash_the_parser(payload: dict[str, Any]) -> None:
    check(payload)


# Shaped like a real text message, every string a user or a broken client controls hostile.
hostile_messages = st.fixed_dictionaries(
    {
        "msgId": hostile_text.filter(bool),
        "conversationId": hostile_text.filter(bool),
        "conversationType": st.sampled_from(["1", "2"]),
        "msgtype": st.sampled_from(["text", "richText", "file"]),
        "text": st.fixed_dictionaries({"content": hostile_text}),
        "content": st.fixed_dictionaries(
            {"richText": st.lists(st.fixed_dictionaries({"text": hostile_text}), max_size=3)},
            optional={"fileName": hostile_text, "downloadCode": hostile_text},
        ),
        "senderStaffId": hostile_text,
        "senderId": hostile_text,
        "senderNick": hostile_text,
        "senderCorpId": hostile_text,
        "isInAtList": st.booleans(),
        "sessionWebhook": hostile_text,
    }
)


def _parsed(payload: dict[str, Any]) -> list[InboundMessage]:
    try:
        return [to_inbound(ChannelId("dt"), payload, "frame-" + str(payload["msgId"]))]
    except PermanentError:
        return []


async def test_hostile_messages_reach_the_journal_as_parsed(tmp_path: Path) -> None:
    """convert -> normalise -> journal, user, conversation and turn on a real SQLite store."""
    stored = await journal_converted(
        tmp_path,
        hostile_messages,
        _parsed,
        examples=[
            {"msgId": "m" * 300, "conversationId": "c\x00", "conversationType": "2",
             "msgtype": "text", "text": {"content": "\udcff hi \x00"}, "isInAtList": True,
             "senderStaffId": "s" * 300, "senderNick": "N\x00" + "n" * 300},
        ],
    )  # fmt: skip
    assert stored >= 100  # nearly every example is a message, not a classified error


def test_huge_and_odd_text_is_made_storable() -> None:
    text = "\udcff" + "x" * 200_000 + "\u0000"
    message = to_inbound(
        ChannelId("dt"),
        {"msgId": "m", "conversationId": "c", "conversationType": "1", "msgtype": "text",
         "text": {"content": text}},
        "f",
    )  # fmt: skip
    # the surrogate replaced, the NUL gone, the length bounded and the cut said
    note = normalize.TEXT_CUT_NOTE.format(limit=normalize.MAX_TEXT_CHARS)
    assert message.text == "\ufffd" + "x" * (normalize.MAX_TEXT_CHARS - 1 - len(note)) + note
    message.text.encode("utf-8")  # raises on anything SQLite or PostgreSQL would refuse
