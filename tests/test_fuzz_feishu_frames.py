"""Hostile frames into the Feishu long-connection reader: never a crash, each acked or dropped,
and every message event that converts reaches the journal (a real SQLite store).

The reader's `_handle` gets every binary or text message the socket delivers; the socket itself
is the leaf replaced here (a recorder of what the client sends back). Events go the provider's
way: convert (normalising) then journal, user, conversation and turn.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channels.feishu import frames
from channels.feishu.api import FeishuApi
from channels.feishu.connection import LongConnection
from channels.feishu.convert import MESSAGE_RECEIVED, event_type, to_inbound
from channels.model import ChannelId
from channels.observer import TOO_DEEP
from common.errors import PermanentError
from storage import Store
from tests.hostile_support import hostile_text, store_inbound
from tests.storage_support import sqlite_url

DEEP = b"[" * 100_000 + b"]" * 100_000  # deeper than the JSON decoder's recursion limit
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000


class RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.sent.append(data)


def connection(
    events: list[dict[str, Any]], store: Store | None = None, drops: list[str] | None = None
) -> tuple[LongConnection, RecordingSocket]:
    async def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        if store is None or event_type(event) != MESSAGE_RECEIVED:
            return
        try:
            message = to_inbound(ChannelId("fs"), event, "ou_bot")
        except PermanentError:
            return  # the provider acks these without journaling
        # a channel of its own per event: a repeated message id would be a redelivery
        message = replace(message, channel_id=ChannelId(f"fs-{next(CHANNELS)}"))
        assert await store_inbound(store, message) == message
        STORED.append(message.message_id)

    api = FeishuApi(app_id="cli_x", app_secret="s", base_url="http://127.0.0.1:9")
    conn = LongConnection(
        api,
        on_event=on_event,
        logger=logging.getLogger("fuzz"),
        on_invalid=None if drops is None else drops.append,
    )
    socket = RecordingSocket()
    conn.socket.ws = socket  # type: ignore[assignment]  # the leaf: what the client sends back
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
CHANNELS = itertools.count()
STORED: list[str] = []


def receive_event(
    text: str, message_id: str, chat_id: str, open_id: str, content: str | None
) -> dict[str, Any]:
    """An `im.message.receive_v1` envelope whose user-controlled strings are the given ones."""
    return {
        "schema": "2.0",
        "header": {"event_id": "ev-" + message_id[:20], "event_type": MESSAGE_RECEIVED},
        "event": {
            "sender": {"sender_id": {"open_id": open_id, "user_id": text[:10]}},
            "message": {
                "message_id": message_id,
                "chat_id": chat_id,
                "chat_type": "p2p",
                "message_type": "text",
                "content": json.dumps({"text": text}) if content is None else content,
            },
        },
    }


# the wire is UTF-8 JSON: a lone surrogate can only arrive as an escape, which json.dumps writes
hostile_events = st.builds(
    lambda *args: json.dumps(receive_event(*args)).encode(),
    hostile_text,
    hostile_text.filter(bool),
    hostile_text.filter(bool),
    hostile_text.filter(bool),
    st.none() | st.just(DEEP.decode()) | hostile_text,
)
payloads = st.one_of(
    st.binary(max_size=64),
    hostile_events,
    st.sampled_from([DEEP, DEEP_OBJECT]),
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


def event_frame(payload: bytes) -> bytes:
    """One whole event in one data frame."""
    headers = {"type": "event", "message_id": "frame-1", "sum": "1", "seq": "0"}
    return frames.encode(
        frames.data_frame(service=1, seq_id=1, log_id=1, headers=headers, payload=payload)
    )


messages = st.one_of(
    data_frames,
    st.builds(event_frame, payloads),  # well-formed frames: their payloads reach the parser
    st.builds(event_frame, hostile_events),  # and message events: they reach the journal
    st.binary(max_size=80),
    st.text(max_size=40),
)


async def test_any_frame_is_acked_dropped_or_buffered_never_a_crash(tmp_path: Path) -> None:
    store = await Store.open(sqlite_url(tmp_path / "fuzz.db"))
    loop = asyncio.get_running_loop()
    STORED.clear()

    async def feed(batch: list[Any]) -> None:
        events: list[dict[str, Any]] = []
        drops: list[str] = []
        conn, socket = connection(events, store, drops)
        for raw in batch:
            await conn._handle(raw)
        for ack in socket.sent:
            decoded = frames.decode(ack)
            assert json.loads(decoded.payload)["code"] in (200, 500)
        # every event handed on was a JSON object and got exactly one ack
        assert len(events) <= len(socket.sent) <= len(batch)
        assert len(drops) <= len(batch)

    # derandomized: CI runs the same batches every time; widen locally with more examples.
    # Hypothesis also draws on constants from the project modules already imported, so the
    # batches (and how many events are storable) depend on which tests ran first: 600 examples
    # keep the count below well above its floor in every order (300 fell short after e2e tests).
    @settings(
        max_examples=600,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @example([event_frame(DEEP)])
    @example([event_frame(DEEP_OBJECT)])
    @example(
        [event_frame(json.dumps(receive_event("\udcff\x00", "m" * 300, "c", "o", None)).encode())]
    )
    @given(st.lists(messages, min_size=1, max_size=8))
    def feed_each(batch: list[Any]) -> None:
        asyncio.run_coroutine_threadsafe(feed(batch), loop).result(30)

    try:
        await asyncio.to_thread(feed_each)  # hypothesis in a thread, the store on this loop
    finally:
        await store.close()
    assert len(STORED) >= 60, len(STORED)  # hostile message events did reach the journal


async def test_deep_nesting_is_dropped_counted_and_acked_the_session_reads_on() -> None:
    events: list[dict[str, Any]] = []
    drops: list[str] = []
    conn, socket = connection(events, drops=drops)
    deep_content = receive_event("x", "om_1", "oc_1", "ou_1", DEEP.decode())
    for payload in (DEEP, DEEP_OBJECT, json.dumps(deep_content).encode()):
        await conn._handle(event_frame(payload))
    # the two unreadable payloads are dropped (and acked: they would only come back); the event
    # whose content is too deep is handed on, where conversion classifies it
    assert drops == [TOO_DEEP, TOO_DEEP]
    assert [json.loads(frames.decode(a).payload)["code"] for a in socket.sent] == [200] * 3
    assert len(events) == 1
