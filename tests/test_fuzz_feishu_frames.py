"""Hostile frames into the Feishu long-connection reader: never a crash, each acked or dropped.

The reader's `_handle` gets every binary or text message the socket delivers; the socket itself
is the leaf replaced here (a recorder of what the client sends back).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.feishu import frames
from channels.feishu.api import FeishuApi
from channels.feishu.connection import LongConnection


class RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.sent.append(data)


def connection(events: list[dict[str, Any]]) -> tuple[LongConnection, RecordingSocket]:
    async def on_event(event: dict[str, Any]) -> None:
        events.append(event)

    api = FeishuApi(app_id="cli_x", app_secret="s", base_url="http://127.0.0.1:9")
    conn = LongConnection(api, on_event=on_event, logger=logging.getLogger("fuzz"))
    socket = RecordingSocket()
    conn._ws = socket  # type: ignore[assignment]  # the leaf: what the client sends back
    return conn, socket


header_values = st.one_of(
    st.sampled_from(["event", "card", "ping", "pong", "0", "1", "3", "-1", "x", ""]),
    st.text(max_size=12),
)
headers = st.dictionaries(
    st.sampled_from(["type", "message_id", "sum", "seq", "trace_id", "biz_rt", "junk"]),
    header_values,
    max_size=6,
)
payloads = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda v: json.dumps(v).encode(), st.dictionaries(st.text(max_size=5), st.integers())
    ),
    st.just(b"\xff\xfe not utf-8"),
    st.just(b'{"header": {"event_type": "im.message.receive_v1"}}'),
)
data_frames = st.builds(
    lambda method, h, p, seq: frames.encode(
        frames.Frame(
            SeqID=seq,
            LogID=1,
            service=1,
            method=method,
            headers=[frames.Header(key=k, value=v) for k, v in h.items()],
            payload=p,
        )
    ),
    st.integers(min_value=-2, max_value=3),
    headers,
    payloads,
    st.integers(min_value=0, max_value=2**64 - 1),
)
messages = st.one_of(data_frames, st.binary(max_size=80), st.text(max_size=40))


@settings(max_examples=400, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=8))
def test_any_frame_is_acked_dropped_or_buffered_never_a_crash(batch: list[Any]) -> None:
    events: list[dict[str, Any]] = []
    conn, socket = connection(events)

    async def feed() -> None:
        for raw in batch:
            await conn._handle(raw)

    asyncio.run(feed())
    for ack in socket.sent:
        decoded = frames.decode(ack)
        assert json.loads(decoded.payload)["code"] in (200, 500)
    # every event handed on was a JSON object and got exactly one ack
    assert len(events) <= len(socket.sent) <= len(batch)
    assert conn.invalid_frames <= len(batch)
