"""Hostile messages through a real provider, on SQLite and on PostgreSQL (issue 10, finding 5).

A lone surrogate, NUL in the text and the name, a message id, a sender id and a name of 300+
characters: the frame is acked once, the message journaled (normalised) and answered, nothing
redelivered, and both backends store exactly the same values. A message the database still
refuses (normalisation switched off to make one) is acked, counted and logged once.

Both emulators serialise frames as UTF-8 JSON without escapes, which cannot carry a lone
surrogate; the real wire carries one only as a `\\udcff` escape, so these frames are built
with the emulators' payload helpers and serialised with escapes, as a platform would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from channels import normalize
from channels.dingtalk.emulator import EmulatorThread
from channels.dingtalk.emulator.gateway import app_uuid
from channels.dingtalk.emulator.payloads import BOT_MESSAGE_TOPIC, bot_message, make_frame
from channels.dingtalk.emulator.server import DingTalkEmulator
from channels.feishu.emulator.payloads import new_event_id, new_message_id, now_ms, receive_event
from channels.feishu.emulator.server import FeishuEmulator
from channels.feishu.emulator.state import ChatItem
from daemon.app import Daemon
from tests.backend_support import backend, database_url, postgres, with_database
from tests.dingtalk_support import DINGTALK_CLIENT_ID, dingtalk_emulator
from tests.e2e_support import FAST_BACKOFF, Stack, settings_for, wait_until
from tests.feishu_support import FEISHU_APP_ID, FeishuEmulatorThread, feishu_emulator
from tests.test_e2e_feishu import FeishuStack, feishu_channel
from tests.test_metrics_e2e import samples, value

__all__ = ["backend", "database_url", "dingtalk_emulator", "feishu_emulator", "postgres"]

TEXT = "\udcff hello \x00 world"
STORED_TEXT = "\ufffd hello  world"  # the surrogate replaced, the NUL removed
ANSWER = "You said: " + STORED_TEXT  # the echo agent repeats what it was given
LONG_MESSAGE_ID = "msg" + "m" * 300
LONG_SENDER_ID = "staff" + "s" * 300
LONG_NAME = "Na\x00me" + "n" * 300


def shortened(raw: str) -> str:
    """What normalisation makes of an over-long clean id: a prefix and a hash of the whole."""
    digest = hashlib.sha256(raw.encode()).hexdigest()[:16]
    return raw[:233] + "~" + digest


async def rows(stack: Stack, sql: str) -> list[tuple[Any, ...]]:
    store = stack.daemon.store
    assert store is not None
    async with store.engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(sql))).all()]


def dropped_unstorable(stack: Stack, platform: str) -> float:
    found = samples(stack.daemon.metrics.render()[0].decode())
    return value(
        found,
        "channeld_frames_dropped_total",
        channel=stack.channel_id,
        platform=platform,
        reason="unstorable",
    )


# -- DingTalk ------------------------------------------------------------------------------------


def dingtalk_frame(
    emulator: DingTalkEmulator, *, text: str, staff: str, nick: str, msg_id: str
) -> tuple[str, str, str]:
    """(raw frame, frame message id, conversation id) of a direct message from `staff`."""
    conversation_id = emulator.state.direct_conversation_id(DINGTALK_CLIENT_ID, staff)
    now = int(time.time() * 1000)
    payload = bot_message(
        emulator.state.apps[DINGTALK_CLIENT_ID],
        corp_id=emulator.corp_id,
        text=text,
        msgtype="text",
        conversation_type="1",
        conversation_id=conversation_id,
        conversation_title="",
        sender_staff_id=staff,
        sender_nick=nick,
        mentioned=True,
        at_staff_ids=[],
        session_webhook=f"{emulator.url}/robot/sendBySession?session=unused",
        session_expires_ms=now + 3_600_000,
        create_at_ms=now,
        download_code=None,
        file_name="",
        is_admin=False,
        extra={"msgId": msg_id},
    )
    frame = make_frame("CALLBACK", BOT_MESSAGE_TOPIC, payload, app_id=app_uuid(DINGTALK_CLIENT_ID))
    frame["data"] = json.dumps(payload)  # escaped: UTF-8 cannot carry a lone surrogate
    return json.dumps(frame), frame["headers"]["messageId"], conversation_id


async def start_dingtalk(tmp_path: Path, emulator: EmulatorThread, url: str) -> Stack:
    settings = with_database(settings_for(tmp_path, emulator.url, None), url)
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    stack = Stack(daemon, emulator, None)
    await stack.connected()
    return stack


async def push_dingtalk(stack: Stack, **fields: str) -> tuple[str, str]:
    raw, frame_id, conversation_id = await stack.emulator.call(
        lambda e: dingtalk_frame(e, **fields)
    )
    await stack.emulator.call(lambda e: e.push_raw(DINGTALK_CLIENT_ID, raw))
    return frame_id, conversation_id


async def dingtalk_card(stack: Stack, conversation_id: str) -> str:
    items = await stack.wait_bot_items(
        conversation_id, lambda i: any(x["kind"] == "card" and x["done"] for x in i)
    )
    (card,) = [x["text"] for x in items if x["kind"] == "card"]
    return str(card)


async def test_dingtalk_hostile_message_is_normalised_journaled_and_answered(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, database_url: str
) -> None:
    stack = await start_dingtalk(tmp_path, dingtalk_emulator, database_url)
    try:
        frame_id, conversation_id = await push_dingtalk(
            stack, text=TEXT, staff=LONG_SENDER_ID, nick=LONG_NAME, msg_id=LONG_MESSAGE_ID
        )
        assert await dingtalk_card(stack, conversation_id) == ANSWER
        await stack.idle()
        assert len(await dingtalk_emulator.acks(frame_id)) == 1
        assert stack.metric("channeld_messages_received_total") == 1
        assert stack.metric("channeld_messages_duplicate_total") == 0
        assert stack.metric("channeld_frames_dropped_total", reason="unstorable") == 0
        # exactly these values, on SQLite and on PostgreSQL alike
        (journal,) = await rows(
            stack, "SELECT platform_message_id, frame_id, state, payload FROM inbound_journal"
        )
        assert journal[:3] == (shortened(LONG_MESSAGE_ID), frame_id, "replied")
        payload = json.loads(journal[3])
        assert payload["text"] == STORED_TEXT
        assert payload["sender"]["platform_id"] == shortened(LONG_SENDER_ID)
        assert payload["sender"]["display_name"] == ("Name" + "n" * 300)[:250]
        assert await rows(
            stack, "SELECT platform_user_id, display_name FROM platform_identity"
        ) == [(shortened(LONG_SENDER_ID), ("Name" + "n" * 300)[:250])]
        assert await rows(stack, "SELECT display_name FROM user_account") == [
            (("Name" + "n" * 300)[:250],)
        ]
        assert await rows(stack, "SELECT key FROM conversation") == [(f"direct:{conversation_id}",)]
        assert await rows(stack, "SELECT role, content FROM message ORDER BY id") == [
            ("user", STORED_TEXT),
            ("assistant", ANSWER),
        ]
    finally:
        await stack.stop()


async def test_dingtalk_message_the_database_refuses_is_acked_counted_and_logged_once(
    tmp_path: Path,
    dingtalk_emulator: EmulatorThread,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # a gap in normalisation, made on purpose: the text reaches the journal as the user sent it
    monkeypatch.setattr(normalize, "text", lambda value: value)
    stack = await start_dingtalk(tmp_path, dingtalk_emulator, database_url)
    try:
        frame_id, _ = await push_dingtalk(
            stack, text="\udcff poison-text", staff="u1", nick="Ann", msg_id="msg-poison"
        )
        acks = await dingtalk_emulator.wait_for(lambda e: e.acks(frame_id))
        assert acks[0].code == 200
        await wait_until(lambda: dropped_unstorable(stack, "dingtalk") == 1)
        logged = [r.getMessage() for r in caplog.records if "cannot be stored" in r.getMessage()]
        assert len(logged) == 1
        assert "channel dt" in logged[0] and "'msg-poison'" in logged[0]
        # the text is in no log line (below INFO, websockets' debug log echoes every frame)
        assert not [
            r
            for r in caplog.records
            if r.levelno >= logging.INFO and "poison-text" in r.getMessage()
        ]
        assert await rows(stack, "SELECT count(*) FROM inbound_journal") == [(0,)]

        # the session is fine, and the next message is answered
        frame_id, conversation_id = await push_dingtalk(
            stack, text="still there?", staff="u1", nick="Ann", msg_id="msg-next"
        )
        assert await dingtalk_card(stack, conversation_id) == "You said: still there?"
        assert len(await dingtalk_emulator.acks()) == 2
        assert stack.supervisor.status().reconnects == 0
    finally:
        await stack.stop()


# -- Feishu --------------------------------------------------------------------------------------


async def feishu_event(
    emulator: FeishuEmulator, *, text: str, open_id: str
) -> tuple[str, str, str]:
    """Pushes a direct text message from `open_id`: (chat id, om_ id, frame message id)."""
    chat_id = emulator.state.p2p_chat_id(FEISHU_APP_ID, open_id)
    message_id = new_message_id()
    chat = emulator.state.chat(FEISHU_APP_ID, chat_id, "p2p")
    emulator.state.add_item(chat, ChatItem(message_id, "user", time.monotonic(), "text", "", ""))
    payload = receive_event(
        emulator.state.apps[FEISHU_APP_ID],
        event_id=new_event_id(),
        message_id=message_id,
        chat_id=chat_id,
        chat_type="p2p",
        message_type="text",
        content={},
        sender_open_id=open_id,
        mentions=(),
        create_time_ms=now_ms(),
    )
    payload["event"]["message"]["content"] = json.dumps({"text": text})  # escaped, see above
    delivery = await emulator.push_event(FEISHU_APP_ID, payload)
    return chat_id, message_id, delivery.frame_message_id


async def start_feishu(tmp_path: Path, emulator: FeishuEmulatorThread, url: str) -> FeishuStack:
    settings = settings_for(tmp_path, emulator.url, None, base_channel=feishu_channel(emulator.url))
    daemon = Daemon(with_database(settings, url), backoff=FAST_BACKOFF)
    await daemon.start()
    stack = FeishuStack(daemon, emulator, None)
    await stack.connected()
    return stack


async def test_feishu_hostile_message_is_normalised_journaled_and_answered(
    tmp_path: Path, feishu_emulator: FeishuEmulatorThread, database_url: str
) -> None:
    stack = await start_feishu(tmp_path, feishu_emulator, database_url)
    open_id = "ou_" + "o" * 300
    try:
        chat_id, message_id, frame_id = await feishu_emulator.call(
            lambda e: feishu_event(e, text=TEXT, open_id=open_id)
        )
        card = await stack.finished_card(chat_id)
        assert card["text"] == ANSWER
        await stack.idle()
        assert [a.code for a in await feishu_emulator.acks(frame_id)] == [200]
        # acked with 200: the emulator's redelivery schedule stops, so this is the only push
        assert len(await feishu_emulator.deliveries(message_id)) == 1
        (journal,) = await rows(
            stack, "SELECT platform_message_id, state, payload FROM inbound_journal"
        )
        assert journal[:2] == (message_id, "replied")
        assert json.loads(journal[2])["text"] == STORED_TEXT
        assert await rows(
            stack, "SELECT platform_user_id, display_name FROM platform_identity"
        ) == [(shortened(open_id), "")]
        assert await rows(stack, "SELECT role, content FROM message ORDER BY id") == [
            ("user", STORED_TEXT),
            ("assistant", ANSWER),
        ]
    finally:
        await stack.stop()


async def test_feishu_message_the_database_refuses_is_acked_not_redelivered(
    tmp_path: Path,
    feishu_emulator: FeishuEmulatorThread,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(normalize, "text", lambda value: value)  # as in the DingTalk test
    stack = await start_feishu(tmp_path, feishu_emulator, database_url)
    try:
        _, message_id, frame_id = await feishu_emulator.call(
            lambda e: feishu_event(e, text="\udcff poison", open_id="ou_poison")
        )
        acks = await feishu_emulator.wait_for(lambda e: e.acks(frame_id))
        assert [a.code for a in acks] == [200]  # not 500: a redelivery would fail the same way
        assert dropped_unstorable(stack, "feishu") == 1
        assert len(await feishu_emulator.deliveries(message_id)) == 1

        sent = await stack.say("still there?")
        assert (await stack.finished_card(sent.chat_id))["text"] == "You said: still there?"
        assert stack.supervisor.status().reconnects == 0
    finally:
        await stack.stop()
