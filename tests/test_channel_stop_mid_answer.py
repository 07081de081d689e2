"""A channel disabled while one of its answers streams: the answer ends at once on its closed
platform client, nothing more reaches the platform, and no HTTP session is opened to leak (the
suite turns the unclosed-session ResourceWarning into an error). Real daemon, emulated DingTalk,
fake LLM, over loopback."""

from __future__ import annotations

import gc
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from channels.dingtalk.emulator import EmulatorThread
from channels.model import ChannelState
from storage.repository import JournalState
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import dingtalk_emulator
from tests.e2e_support import start_stack
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture"]

# About 2 s of streaming at 50 ms a word: the channel is disabled well before the end.
LONG_ANSWER = " ".join(f"word{n}" for n in range(40))


class SessionSpy:
    """Records every aiohttp client session this test's thread opens."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[aiohttp.ClientSession] = []
        thread = threading.get_ident()
        real_init = aiohttp.ClientSession.__init__

        def init(session: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
            if threading.get_ident() == thread:  # not the emulator's thread
                self.opened.append(session)
            real_init(session, *args, **kwargs)

        monkeypatch.setattr(aiohttp.ClientSession, "__init__", init)


async def reply_calls(emulator: EmulatorThread, since: float) -> list[str]:
    """Calls that carry a reply (cards, messages) and arrived after `since` (monotonic)."""
    calls = await emulator.calls()
    return [c.path for c in calls if c.at > since and not c.path.startswith("/v1.0/gateway")]


async def test_disabling_a_channel_mid_answer_ends_the_answer_and_leaks_no_session(
    tmp_path: Path,
    dingtalk_emulator: EmulatorThread,
    fake_llm: FakeLLM,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = SessionSpy(monkeypatch)
    fake_llm.script_reply(LONG_ANSWER, token_interval=0.05)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        sent = await stack.say("tell me a long story")
        await stack.wait_bot_items(
            sent.conversation_id, lambda items: bool(items) and bool(items[0]["text"])
        )
        opened_before = len(spy.opened)
        service, store = stack.daemon.channels, stack.daemon.store
        assert service is not None and store is not None
        await service.set_enabled(stack.channel_id, False)
        assert stack.state() is ChannelState.DISABLED
        stopped_at = time.monotonic()  # a call in flight until now may still have arrived
        await stack.idle()  # the answer ended (it did not wait for the whole LLM stream to land)

        assert spy.opened[opened_before:] == []  # the closed client opened no new session
        assert await reply_calls(dingtalk_emulator, stopped_at) == []  # nothing more was sent
        entry = await store.journal_get(1)
        assert entry is not None
        assert entry.state is JournalState.FAILED
        assert "client closed" in (entry.error or "")
        card = (await stack.bot_items(sent.conversation_id))[0]
        assert card["text"] and LONG_ANSWER.startswith(card["text"])
        assert card["text"] != LONG_ANSWER
    finally:
        await stack.stop()
    assert all(session.closed for session in spy.opened)
    del stack
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()  # an abandoned session warns when it is collected
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
