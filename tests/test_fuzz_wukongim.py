"""Hostile WuKongIM `msg.notify` bodies: every item is converted, ignored or counted unreadable,
never a crash of the batch; whatever is converted the journal can store (real SQLite), and the
callback query is read the same whatever the server put in it."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channels.model import ChannelId
from channels.wukongim.convert import query_params, to_batch
from tests.hostile_support import hostile_text, journal_converted

BOT = "aibot"
FIELDS = [
    "header", "setting", "message_id", "message_idstr", "client_msg_no", "message_seq",
    "from_uid", "channel_id", "channel_type", "expire", "timestamp", "payload",
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
items = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=12)


def b64(value: Any) -> str:
    # surrogates survive as escapes, as a server's JSON encoder writes them
    return base64.b64encode(json.dumps(value).encode()).decode()


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@example([{"message_idstr": "1", "from_uid": "u", "channel_id": BOT, "channel_type": 1,
           "payload": "!!not base64!!"}])  # fmt: skip
@example([{"message_id": 2**64, "from_uid": "u", "channel_id": BOT, "channel_type": 1,
           "payload": b64({"type": 1, "content": {"deep": [[[[]]]]}})}])  # fmt: skip
@given(st.lists(items | json_values, max_size=5))
def test_arbitrary_batches_are_converted_item_by_item(body: list[Any]) -> None:
    batch = to_batch(ChannelId("wk"), body, BOT)
    assert len(batch.messages) + batch.ignored + batch.malformed == len(body)
    assert all(isinstance(m.text, str) for m in batch.messages)


# Shaped like a user's text message, every string a user or a broken client controls hostile.
hostile_messages = st.fixed_dictionaries(
    {
        "message_idstr": hostile_text.filter(bool),
        "message_id": st.integers(min_value=0, max_value=2**64),
        "from_uid": hostile_text.filter(lambda uid: bool(uid) and uid != BOT),
        "channel_type": st.sampled_from([1, 2]),
        "channel_id": st.sampled_from([BOT]) | hostile_text.filter(bool),
        "timestamp": st.integers(min_value=-(2**40), max_value=2**40),
        "payload": st.fixed_dictionaries(
            {"type": st.sampled_from([1, 2, 3, 4, 8, 99]), "content": hostile_text},
            optional={
                "mention": st.fixed_dictionaries({"uids": st.just([BOT])}),
                "url": hostile_text,
            },
        ).map(b64),
    }
)


async def test_hostile_messages_reach_the_journal_as_converted(tmp_path: Path) -> None:
    """convert -> normalise -> journal, user, conversation and turn on a real SQLite store."""
    stored = await journal_converted(
        tmp_path,
        hostile_messages,
        lambda item: to_batch(ChannelId("wk"), [item], BOT).messages,
        examples=[
            {"message_idstr": "m" * 300, "message_id": 2**63 + 1, "from_uid": "u\x00" * 200,
             "channel_type": 1, "channel_id": BOT, "timestamp": 0,
             "payload": b64({"type": 1, "content": "\udcff hi \x00"})},
        ],
    )  # fmt: skip
    assert stored > 0  # the strategy reaches the journal, not only the ignore paths


@given(st.text(max_size=60))
@settings(max_examples=200, deadline=None, derandomize=True)
def test_any_query_reads_without_error_and_the_quirk_keeps_the_key(raw: str) -> None:
    params = query_params(raw)
    assert all(isinstance(v, str) for v in params.values())
    quirk = query_params("key=k-0123456789abcdef?event=msg.notify")
    assert quirk == {"key": "k-0123456789abcdef", "event": "msg.notify"}
