"""SIGKILL after the final text reached the card but before the outcome was recorded: the next
start ends the card with the answer it already showed, without a note and without answering again
(the soak once counted such a message lost: the second answer came after the user's next
message). Real `channeld run` processes, the emulators and the fake LLM; the outcome's write is
held back by holding SQLite's write lock from another connection, as a backup would."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

from channels.dingtalk.emulator import EmulatorThread
from channels.recovery import INTERRUPTED_NOTE
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import (
    DINGTALK_CLIENT_ID,
    dingtalk_emulator,
)
from tests.e2e_support import DaemonProcess
from tests.feishu_support import (
    FEISHU_APP_ID,
    FeishuEmulatorThread,
    feishu_emulator,
)
from tests.recovery_support import cards_of, dingtalk_channel, feishu_channel, write_config
from tests.storage_support import WriteLock
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture", "feishu_emulator"]

ANSWER = "Echo: this answer reached the user in full"
FINAL_CALL_DELAY = 1.5  # seconds the platform holds the reply's last call: time to take the lock


def journal_and_answers(database: Path) -> tuple[list[str], list[str]]:
    """The journal rows' states and the assistant turns stored."""
    with sqlite3.connect(database) as connection:
        states = [r[0] for r in connection.execute("SELECT state FROM inbound_journal")]
        turns = [
            r[0] for r in connection.execute("SELECT content FROM message WHERE role='assistant'")
        ]
    return states, turns


def others_of(view: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [i for i in (view or {"items": []})["items"] if i["kind"] not in {"card", "user"}]


async def restart_after_kill(first: DaemonProcess, lock: WriteLock) -> DaemonProcess:
    """Kill the first process (its outcome write waiting for the lock), free the lock, start
    again and wait for recovery."""
    assert await first.end(signal.SIGKILL) == -signal.SIGKILL
    await lock.release()
    second = DaemonProcess(first.config)
    await second.start()
    await second.wait_log("recovered after restart")
    return second


async def test_dingtalk_a_card_that_showed_its_answer_is_not_answered_again(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    fake_llm.script_reply(ANSWER, token_interval=0.15)
    channel = dingtalk_channel(dingtalk_emulator.url, 10)
    first = DaemonProcess(write_config(tmp_path, fake_llm, channel))
    await first.start()
    await first.wait_log("channel dt: connected")
    sent = await dingtalk_emulator.send_user_message(DINGTALK_CLIENT_ID, text="a question")
    assert sent.delivered

    def card(e: Any) -> dict[str, Any] | None:
        cards = cards_of(e.chat_view(sent.conversation_id))
        return cards[0] if cards else None

    await dingtalk_emulator.wait_for(lambda e: (c := card(e)) is not None and c["text"], 15)
    # the card's last call (its status set to finished) is held: the final text lands first
    await dingtalk_emulator.add_fault(
        "/v1.0/card/instances", None, latency=FINAL_CALL_DELAY, method="PUT"
    )
    await dingtalk_emulator.wait_for(lambda e: (c := card(e)) is not None and c["done"], 15)
    lock = WriteLock(tmp_path / "channeld.db")
    await lock.take()
    second: DaemonProcess | None = None
    try:
        await dingtalk_emulator.wait_for(
            lambda e: (c := card(e)) is not None and c["flow_status"] == "3", 15
        )
        second = await restart_after_kill(first, lock)
        view = await dingtalk_emulator.chat_view(sent.conversation_id)
        [shown] = cards_of(view)
        assert shown["text"] == ANSWER and INTERRUPTED_NOTE not in shown["text"]
        assert shown["flow_status"] == "3"
        assert others_of(view) == []
        assert len(fake_llm.requests) == 1  # not answered again
        assert journal_and_answers(tmp_path / "channeld.db") == (["replied"], [ANSWER])
    finally:
        await lock.release()
        if second is not None:
            assert await second.end(signal.SIGTERM) == 0
        else:
            await first.end(signal.SIGKILL)


async def test_feishu_a_card_that_showed_its_answer_is_not_answered_again(
    tmp_path: Path, feishu_emulator: FeishuEmulatorThread, fake_llm: FakeLLM
) -> None:
    fake_llm.script_reply(ANSWER, token_interval=0.15)
    channel = feishu_channel(feishu_emulator.url, 10)
    first = DaemonProcess(write_config(tmp_path, fake_llm, channel))
    await first.start()
    await first.wait_log("channel fs: connected")
    sent = await feishu_emulator.send_user_message(FEISHU_APP_ID, text="a question")
    assert sent.delivered

    def card(e: Any) -> dict[str, Any] | None:
        cards = cards_of(e.chat_view(sent.chat_id))
        return cards[0] if cards else None

    await feishu_emulator.wait_for(lambda e: (c := card(e)) is not None and c["text"], 15)
    # the card's last call (streaming switched off) is held: the final text lands first
    await feishu_emulator.add_fault(
        "/open-apis/cardkit/v1/cards/*/settings", None, delay=FINAL_CALL_DELAY
    )
    await feishu_emulator.wait_for(lambda e: (c := card(e)) is not None and c["text"] == ANSWER, 15)
    lock = WriteLock(tmp_path / "channeld.db")
    await lock.take()
    second: DaemonProcess | None = None
    try:
        await feishu_emulator.wait_for(lambda e: (c := card(e)) is not None and c["done"], 15)
        second = await restart_after_kill(first, lock)
        view = await feishu_emulator.chat_view(sent.chat_id)
        [shown] = cards_of(view)
        assert shown["text"] == ANSWER and shown["done"]
        assert others_of(view) == []  # not the rest of the answer as a message either
        assert len(fake_llm.requests) == 1
        assert journal_and_answers(tmp_path / "channeld.db") == (["replied"], [ANSWER])
    finally:
        await lock.release()
        if second is not None:
            assert await second.end(signal.SIGTERM) == 0
        else:
            await first.end(signal.SIGKILL)
