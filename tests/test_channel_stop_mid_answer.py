"""A channel disabled or restarted while one of its answers streams: its socket closes at once,
the answer ends properly through the channel's old HTTP client, which is closed right after it,
and no HTTP session is opened to leak (the suite turns the unclosed-session ResourceWarning into an
error). An answer that outlives the grace period (the daemon's graceful_timeout) is cut short as
at a shutdown: its card says it stopped. Real daemon, emulated DingTalk, fake LLM, over loopback.
"""

from __future__ import annotations

import gc
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from channels.commands import QUEUED_TEXT
from channels.dingtalk.emulator import EmulatorThread
from channels.emitter import EmitterSettings
from channels.model import ChannelState
from channels.sessions import SessionProvider
from daemon.app import Daemon
from storage.repository import JournalState
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import DINGTALK_CLIENT_ID, dingtalk_emulator
from tests.e2e_support import FAST_BACKOFF, Stack, settings_for
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture"]

# About 2 s of streaming at 50 ms a word: the channel stops well before the end.
LONG_ANSWER = " ".join(f"word{n}" for n in range(40))
FINISHED, FAILED = "3", "5"  # an AI card's flowStatus


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


async def start(tmp_path: Path, emulator: EmulatorThread, llm: FakeLLM, *, grace: float) -> Stack:
    """The daemon with `grace` seconds for answers of a stopped channel (graceful_timeout)."""
    settings = settings_for(tmp_path, emulator.url, llm)
    daemon_section = settings.daemon.model_copy(update={"graceful_timeout": grace})
    daemon = Daemon(settings.model_copy(update={"daemon": daemon_section}), backoff=FAST_BACKOFF)
    await daemon.start()
    stack = Stack(daemon, emulator, llm)
    await stack.connected()
    return stack


async def streaming(stack: Stack, text: str) -> tuple[Any, SessionProvider[Any, Any, Any]]:
    """Ask a question and wait until its card shows some text; the channel's provider."""
    sent = await stack.say(text)
    await stack.wait_bot_items(
        sent.conversation_id, lambda items: bool(items) and bool(items[0]["text"])
    )
    provider = stack.supervisor.provider
    assert isinstance(provider, SessionProvider)
    return sent, provider


async def socket_gone(emulator: EmulatorThread) -> None:
    await emulator.wait_for(lambda e: not e.live_connections(DINGTALK_CLIENT_ID), 5)


def client_closed(provider: SessionProvider[Any, Any, Any]) -> bool:
    api = provider._api
    return bool(api._closed) and api._session is None


def no_resource_warnings() -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()  # an abandoned session warns when it is collected
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


async def test_disabling_a_channel_mid_answer_lets_the_answer_finish_and_leaks_nothing(
    tmp_path: Path,
    dingtalk_emulator: EmulatorThread,
    fake_llm: FakeLLM,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = SessionSpy(monkeypatch)
    fake_llm.script_reply(LONG_ANSWER, token_interval=0.05)
    stack = await start(tmp_path, dingtalk_emulator, fake_llm, grace=30)
    try:
        sent, provider = await streaming(stack, "tell me a long story")
        opened_before = len(spy.opened)
        service, store = stack.daemon.channels, stack.daemon.store
        assert service is not None and store is not None
        await service.set_enabled(stack.channel_id, False)
        assert stack.state() is ChannelState.DISABLED
        await socket_gone(dingtalk_emulator)  # intake stopped at once, no orphan socket
        card = (await stack.bot_items(sent.conversation_id))[0]
        assert card["flow_status"] != FINISHED  # ... while the answer still streams
        assert not client_closed(provider)  # its client waits for it

        await stack.idle()
        card = (await stack.bot_items(sent.conversation_id))[0]
        assert (card["text"], card["flow_status"]) == (LONG_ANSWER, FINISHED)
        entry = await store.journal_get(1)
        assert entry is not None
        assert (entry.state, entry.error) == (JournalState.REPLIED, None)
        assert client_closed(provider)  # closed with the answer, not at the daemon's stop
        assert spy.opened[opened_before:] == []  # no session opened after the stop
        assert all(session.closed for session in spy.opened)
        assert stack.state() is ChannelState.DISABLED
    finally:
        await stack.stop()
    del stack
    assert no_resource_warnings() == []


async def test_restarting_a_channel_mid_answer_finishes_it_on_the_old_client_and_the_queue_moves(
    tmp_path: Path,
    dingtalk_emulator: EmulatorThread,
    fake_llm: FakeLLM,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = SessionSpy(monkeypatch)
    fake_llm.script_reply(LONG_ANSWER, token_interval=0.05)
    stack = await start(tmp_path, dingtalk_emulator, fake_llm, grace=30)
    try:
        sent, old = await streaming(stack, "tell me a long story")
        (before,) = await dingtalk_emulator.live_connections(DINGTALK_CLIENT_ID)
        await stack.say("and then?")
        queued = QUEUED_TEXT.format(ahead=1)  # behind the answer in progress
        await stack.wait_bot_items(sent.conversation_id, lambda i: i[-1]["text"] == queued)
        service, store = stack.daemon.channels, stack.daemon.store
        assert service is not None and store is not None
        await service.restart(stack.channel_id)
        await stack.connected()
        (after,) = await dingtalk_emulator.live_connections(DINGTALK_CLIENT_ID)  # one at a time
        assert after.connection_id != before.connection_id
        new = stack.supervisor.provider
        assert new is not old
        assert not client_closed(old)

        await stack.idle()
        items = await stack.bot_items(sent.conversation_id)
        cards = [i for i in items if i["kind"] == "card"]
        assert [i["text"] for i in items if i["kind"] != "card"] == [queued]
        assert [(c["text"], c["flow_status"]) for c in cards] == [
            (LONG_ANSWER, FINISHED),  # on the old client
            ("Echo: and then?", FINISHED),  # the queued message, on the new runtime
        ]
        for entry_id in (1, 2):
            entry = await store.journal_get(entry_id)
            assert entry is not None
            assert (entry.state, entry.error) == (JournalState.REPLIED, None)
        assert client_closed(old)
        assert not client_closed(new)
        assert [s for s in spy.opened if not s.closed] == [new._api._session]
    finally:
        await stack.stop()
    del stack
    assert no_resource_warnings() == []


async def test_an_answer_outliving_the_grace_period_is_cut_short_and_its_client_closed(
    tmp_path: Path,
    dingtalk_emulator: EmulatorThread,
    fake_llm: FakeLLM,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="channels.manager")
    spy = SessionSpy(monkeypatch)
    fake_llm.script_reply(LONG_ANSWER, token_interval=0.05)
    stack = await start(tmp_path, dingtalk_emulator, fake_llm, grace=0.3)
    try:
        sent, provider = await streaming(stack, "tell me a long story")
        opened_before = len(spy.opened)
        service, store = stack.daemon.channels, stack.daemon.store
        assert service is not None and store is not None
        await service.set_enabled(stack.channel_id, False)
        await socket_gone(dingtalk_emulator)

        await stack.idle()
        card = (await stack.bot_items(sent.conversation_id))[0]
        stopped = EmitterSettings().stopped_text
        assert card["flow_status"] == FAILED
        assert card["text"].endswith(f"\n\n{stopped}")  # what it showed, and that it stopped
        shown = card["text"].removesuffix(f"\n\n{stopped}")
        assert shown and LONG_ANSWER.startswith(shown) and shown != LONG_ANSWER
        entry = await store.journal_get(1)
        assert entry is not None
        assert (entry.state, entry.error) == (JournalState.FAILED, "stopped")
        assert "1 answer(s) still running 0s after it stopped; cutting them short" in caplog.text
        assert client_closed(provider)
        assert spy.opened[opened_before:] == []
        assert all(session.closed for session in spy.opened)
    finally:
        await stack.stop()
    del stack
    assert no_resource_warnings() == []
