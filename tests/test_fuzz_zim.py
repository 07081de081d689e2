"""Hostile ZIM callbacks: every body is converted, ignored or refused as unreadable (never another
exception), signed or not the provider answers or rejects it cleanly, and whatever is converted
the journal can store (real SQLite)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channels.callbacks import Callback, CallbackRejected, Intake
from channels.model import ChannelId, InboundMessage
from channels.zim.config import ZimChannelConfig
from channels.zim.convert import callback_signature, to_inbound, url_decoded
from channels.zim.provider import ZimProvider
from common.errors import PermanentError
from tests.hostile_support import hostile_text, journal_converted

ROBOT = "@RBT#assistant"
SECRET = "0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000
FIELDS = [
    "appid", "event", "nonce", "signature", "timestamp", "from_user_id", "conv_type", "conv_id",
    "msg_type", "sub_msg_type", "source", "msg_body", "msg_id", "msg_seq", "msg_time",
    "send_result", "payload", "user_list",
]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | hostile_text,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=14)


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@example({"event": "bot_msg", "from_user_id": "u", "conv_type": 0, "msg_id": 2**64,
          "msg_type": 11, "msg_body": "%7B%22fileName%22%3A" + "%5B" * 5000})  # fmt: skip
@example({"event": "send_msg", "from_user_id": "u", "conv_type": 0, "conv_id": ROBOT,
          "msg_id": "1", "msg_body": "%ED%A0%80"})  # fmt: skip
@given(bodies)
def test_arbitrary_bodies_are_converted_ignored_or_unreadable(body: dict[str, Any]) -> None:
    try:
        message = to_inbound(ChannelId("zim"), body, ROBOT)
    except PermanentError:
        return
    assert message is None or isinstance(message.text, str)


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_any_body_text_decodes_to_text(raw: str) -> None:
    assert isinstance(url_decoded(raw), str)


async def _journal(messages: Any) -> Intake:
    return Intake(journaled=len(messages))


async def test_hostile_callbacks_are_answered_or_rejected_never_crash() -> None:
    config = ZimChannelConfig(id="zim", app_id=1, server_secret=SECRET, robot_id=ROBOT)
    provider = ZimProvider(config, _no_sink, wall_clock=lambda: NOW)
    loop = asyncio.get_running_loop()

    async def handle(body: dict[str, Any], sign: bool) -> None:
        if sign and isinstance(body.get("nonce"), str) and isinstance(body.get("timestamp"), int):
            body["signature"] = callback_signature(SECRET, str(body["timestamp"]), body["nonce"])
        raw = json.dumps(body).encode()
        callback = Callback(query="", headers={}, body=raw, payload=body)
        try:
            answer = await provider.handle_callback(callback, _journal)
        except CallbackRejected:
            return
        assert answer.status == 200

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(bodies, st.booleans(), st.integers(min_value=NOW - 900, max_value=NOW + 900))
    def run(body: dict[str, Any], sign: bool, timestamp: int) -> None:
        body = {**body, "timestamp": timestamp, "nonce": str(body.get("nonce"))}
        asyncio.run_coroutine_threadsafe(handle(body, sign), loop).result(30)

    try:
        await asyncio.to_thread(run)
    finally:
        await provider.close()


async def _no_sink(_message: InboundMessage) -> None:
    raise AssertionError("callbacks go through the batch sink")


# Shaped like a user's message to the robot, every string a user or a broken client controls
# hostile.
hostile_messages = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["bot_msg", "send_msg"]),
        "from_user_id": hostile_text.filter(lambda uid: bool(uid) and uid != ROBOT),
        "conv_type": st.just(0),
        "conv_id": st.just(ROBOT),
        "msg_type": st.sampled_from([1, 11, 12, 200, 77]),
        "msg_body": hostile_text,
        "msg_id": hostile_text.filter(lambda i: bool(i.strip())) | st.integers(0, 2**64),
        "msg_time": st.integers(min_value=-(2**50), max_value=2**50),
    }
)


async def test_hostile_messages_reach_the_journal_as_converted(tmp_path: Path) -> None:
    """convert -> normalise -> journal, user, conversation and turn on a real SQLite store."""
    stored = await journal_converted(
        tmp_path,
        hostile_messages,
        lambda body: filter(None, [to_inbound(ChannelId("zim"), body, ROBOT)]),
        examples=[
            {"event": "bot_msg", "from_user_id": "u\x00" * 200, "conv_type": 0,
             "conv_id": ROBOT, "msg_type": 1, "msg_body": "\udcff hi \x00%E4%BD%A0",
             "msg_id": "m" * 300, "msg_time": 0},
        ],
    )  # fmt: skip
    assert stored > 0  # the strategy reaches the journal, not only the ignore paths
