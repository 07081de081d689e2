"""Hostile Easemob callbacks: any JSON body is answered, refused (401) or found malformed (400),
never a crash of the request; a signed body's message is converted, ignored or counted unreadable;
whatever is converted the journal can store (real SQLite)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from channels.callbacks import Callback, CallbackMalformed, CallbackRejected, Intake
from channels.easemob.config import EasemobChannelConfig
from channels.easemob.convert import security, to_inbound
from channels.easemob.provider import EasemobProvider
from channels.model import ChannelId, InboundMessage
from tests.hostile_support import hostile_text, journal_converted

BOT = "aibot"
SECRET = "fuzz-secret"
NOW = 1_700_000_000.0
FIELDS = [
    "callId", "eventType", "timestamp", "chat_type", "group_id", "from", "to", "msg_id",
    "payload", "security", "securityVersion", "appkey", "content_type", "bodies", "type", "msg",
]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | hostile_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=14,
)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=12)


def sign(body: dict[str, Any]) -> dict[str, Any]:
    """`body` stamped now and signed, whatever its callId (forced to a string)."""
    call_id = body.get("callId")
    call_id = call_id if isinstance(call_id, str) and call_id else "org#app_x"
    stamp = int(NOW * 1000)
    return {
        **body,
        "callId": call_id,
        "timestamp": stamp,
        "security": security(call_id, SECRET, str(stamp)),
    }


def provider() -> EasemobProvider:
    config = EasemobChannelConfig(
        id="em",
        org_name="org",
        app_name="app",
        client_id="id",
        client_secret=SecretStr("s"),
        callback_secret=SecretStr(SECRET),
        bot_user=BOT,
    )

    async def no_sink(_message: InboundMessage) -> None:
        raise AssertionError("callbacks go through the batch sink")

    return EasemobProvider(config, no_sink, wall_clock=lambda: NOW)


async def journal(messages: Sequence[InboundMessage]) -> Intake:
    assert all(isinstance(m.text, str) and m.chat_id for m in messages)
    return Intake(journaled=len(messages))


def handled(target: EasemobProvider, body: Any) -> str:
    raw = json.dumps(body).encode()
    callback = Callback(query="", headers={}, body=raw, payload=json.loads(raw))
    try:
        answer = asyncio.run(target.handle_callback(callback, journal))
    except CallbackRejected as exc:
        return f"rejected {exc.reason}"
    except CallbackMalformed:
        return "malformed"
    assert answer.status == 200
    assert answer.body in (None, {"valid": True})
    return "answered"


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@example({"callId": "\udcff", "timestamp": 1, "security": "\ud83d"})
@example({"callId": "c", "timestamp": 10**30, "security": "x"})
@given(bodies | json_values)
def test_arbitrary_bodies_are_answered_refused_or_malformed(body: Any) -> None:
    outcome = handled(provider(), body)
    assert outcome in {"malformed", "rejected signature", "rejected timestamp"}


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@example({"chat_type": "chat", "from": "u", "to": BOT, "msg_id": "1",
          "payload": {"bodies": [{"type": "txt", "msg": {"deep": [[[[]]]]}}]}})  # fmt: skip
@example({"chat_type": "chat", "from": "u", "to": BOT, "msg_id": 2**64,
          "payload": {"type": "txt", "msg": "\udcff hi \x00"}})  # fmt: skip
@given(bodies)
def test_arbitrary_signed_bodies_are_answered(body: dict[str, Any]) -> None:
    assert handled(provider(), sign(body)) == "answered"


# Shaped like a user's text message to the bot, every string a user or a client controls hostile.
hostile_messages = st.fixed_dictionaries(
    {
        "msg_id": hostile_text.filter(bool) | st.integers(min_value=0, max_value=2**64),
        "from": hostile_text.filter(lambda user: bool(user) and user != BOT),
        "to": st.just(BOT),
        "chat_type": st.just("chat"),
        "timestamp": st.integers(min_value=-(2**40), max_value=2**50),
        "payload": st.fixed_dictionaries(
            {"type": st.sampled_from(["txt", "img", "file", "custom", "loc"]), "msg": hostile_text},
            optional={"url": hostile_text, "filename": hostile_text},
        )
        | st.lists(
            st.fixed_dictionaries({"type": st.just("txt"), "msg": hostile_text}),
            min_size=1,
            max_size=3,
        ).map(lambda b: {"ext": {}, "bodies": b}),
    }
)


def _converted(body: dict[str, Any]) -> list[InboundMessage]:
    message = to_inbound(ChannelId("em"), body, BOT)
    assert message is not None
    return [message]


async def test_hostile_messages_reach_the_journal_as_converted(tmp_path: Path) -> None:
    """convert -> normalise -> journal, user, conversation and turn on a real SQLite store."""
    stored = await journal_converted(
        tmp_path,
        hostile_messages,
        _converted,
        examples=[
            {"msg_id": "m" * 300, "from": "u\x00" * 200, "to": BOT, "chat_type": "chat",
             "timestamp": 0, "payload": {"type": "txt", "msg": "\udcff hi \x00"}},
        ],
    )  # fmt: skip
    assert stored > 0
