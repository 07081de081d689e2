"""A message that arrives while the daemon starts, with a row a crash left unfinished: the new
message is answered once (by its live worker, not by recovery too) and the old row is recovered
once. The first `channeld run` is SIGKILLed mid-reply; the emulator holds the new message until
the restarted daemon's socket connects, and delivers it then. The restarted daemon runs in this
process so the test can widen the race: when recovery reads the journal after the channels
started, the read waits until the held message has been journaled (and acked)."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from channels.dingtalk.emulator import EmulatorThread
from channels.recovery import INTERRUPTED_NOTE
from daemon.app import Daemon
from daemon.config import load
from storage.repository import JournalEntry, Store
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import (
    DINGTALK_CLIENT_ID,
    dingtalk_emulator,
)
from tests.e2e_support import DaemonProcess, wait_until
from tests.recovery_support import cards_of, dingtalk_channel, write_config
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture"]

OLD, NEW = "tell me a long story", "a question during the restart"


def journal_states(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [r[0] for r in connection.execute("SELECT state FROM inbound_journal ORDER BY id")]


async def test_a_message_arriving_during_startup_is_answered_once_and_the_old_row_recovered_once(
    tmp_path: Path,
    dingtalk_emulator: EmulatorThread,
    fake_llm: FakeLLM,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a crash mid-reply leaves the old message's row unfinished, its card streaming
    fake_llm.script_stall_mid_stream(after_tokens=3, seconds=60)
    config = write_config(
        tmp_path,
        fake_llm,
        dingtalk_channel(dingtalk_emulator.url, 0.05),
        daemon="graceful_timeout = 0",
    )
    first = DaemonProcess(config)
    await first.start()
    await first.wait_log("channel dt: connected")
    old = await dingtalk_emulator.send_user_message(DINGTALK_CLIENT_ID, text=OLD)
    assert old.delivered
    await dingtalk_emulator.wait_for(
        lambda e: any(c["text"] for c in cards_of(e.chat_view(old.conversation_id))), 15
    )
    assert await first.end(signal.SIGKILL) == -signal.SIGKILL

    # another user writes while no daemon runs: held for the next connection
    await dingtalk_emulator.call(lambda e: setattr(e.gateway, "hold_offline", True))
    new = await dingtalk_emulator.send_user_message(
        DINGTALK_CLIENT_ID, text=NEW, sender_staff_id="user-2", sender_nick="Second User"
    )
    assert not new.delivered and "held" in new.reason

    daemon = Daemon(load(config))
    real_read = Store.journal_unfinished

    async def read_late(store: Store, channel_id: str | None = None) -> list[JournalEntry]:
        manager = daemon.manager
        if manager is not None and manager.started:
            # the channels run already: the held message gets in first
            await dingtalk_emulator.wait_for(lambda e: e.acks(new.frame_message_id), 10)
        return await real_read(store, channel_id)

    monkeypatch.setattr(Store, "journal_unfinished", read_late)
    await daemon.start()
    try:
        assert daemon.manager is not None
        handler = daemon.manager.handler

        def answered(e: Any) -> bool:
            old_cards = cards_of(e.chat_view(old.conversation_id))
            return len(old_cards) == 2 and bool(cards_of(e.chat_view(new.conversation_id)))

        await dingtalk_emulator.wait_for(answered, 20)
        # recovery queued its jobs before start() returned: once idle, every answer has ended
        await wait_until(lambda: not handler.busy())

        (new_card,) = cards_of(await dingtalk_emulator.chat_view(new.conversation_id))
        assert (new_card["text"], new_card["flow_status"]) == (f"Echo: {NEW}", "3")
        stuck, fresh = cards_of(await dingtalk_emulator.chat_view(old.conversation_id))
        assert stuck["flow_status"] == "5" and INTERRUPTED_NOTE in stuck["text"]
        assert (fresh["text"], fresh["flow_status"]) == (f"Echo: {OLD}", "3")
        asked = [r.messages[-1]["content"] for r in fake_llm.requests]
        assert sorted(asked) == sorted([OLD, OLD, NEW])  # once before the crash, once after
        assert journal_states(tmp_path / "channeld.db") == ["replied", "replied"]
    finally:
        await daemon.stop()
