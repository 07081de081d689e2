"""Two bots (two channels) in one DingTalk group chat, the same user talking to both: each bot
answers on its own worker, so a slow answer of one never delays the other and `/stop` sent to one
stops only its own answer. Real daemon, emulated DingTalk and fake LLM, over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from channels.commands import NOTHING_TO_STOP_TEXT, STOPPED_TEXT
from channels.dingtalk.emulator import EmulatorThread
from channels.model import ChannelState
from daemon.app import Daemon
from daemon.config import validate
from tests.agents_support import FAKE_LLM_KEY, fake_llm_fixture
from tests.dingtalk_support import DINGTALK_TEMPLATE, FAST_PING
from tests.e2e_support import FAST_BACKOFF, wait_until
from tools.fake_llm import Behaviour, FakeLLM

__all__ = ["fake_llm_fixture"]

BOTS = {"alpha": ("ding-alpha", "secret-alpha"), "bravo": ("ding-bravo", "secret-bravo")}
GROUP = "cid-two-bots"
STALL = 30.0  # seconds an answer hangs mid-stream: far longer than any wait below


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorThread]:
    """A DingTalk emulator with two apps, one per bot."""
    async with EmulatorThread(
        list(BOTS.values()), templates=[DINGTALK_TEMPLATE], ping_interval=FAST_PING
    ) as emulator:
        yield emulator


@pytest.fixture
async def daemon(
    tmp_path: Path, emulator: EmulatorThread, fake_llm: FakeLLM
) -> AsyncIterator[Daemon]:
    """The daemon with one channel per bot, both connected."""
    channels = [
        {
            "id": channel_id,
            "type": "dingtalk",
            "agent": "default",
            "client_id": client_id,
            "client_secret": secret,
            "card_template_id": DINGTALK_TEMPLATE,
            "api_base": emulator.url,
            "card_update_interval": 0.05,
            "request_timeout": 3,
        }
        for channel_id, (client_id, secret) in BOTS.items()
    ]
    agent = {
        "type": "openai",
        "base_url": fake_llm.url,
        "api_key": FAKE_LLM_KEY,
        "model": "fake-model",
        "timeout": 60,
        "first_token_timeout": 5,
    }
    settings = validate(
        {
            "daemon": {"state_dir": str(tmp_path), "graceful_timeout": 0},
            "admin": {"listen": "127.0.0.1:0"},
            "agents": {"default": agent},
            "channels": channels,
        }
    )
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        manager = daemon.manager
        assert manager is not None
        await wait_until(
            lambda: all(manager.status(c).state is ChannelState.CONNECTED for c in BOTS)
        )
        yield daemon
    finally:
        await daemon.stop()


def stalling(text: str) -> Behaviour:
    """An answer that shows its first two words, then hangs."""
    return Behaviour(text=text, stall_after=2, stall=STALL)


async def say(emulator: EmulatorThread, bot: str, text: str) -> None:
    """The same user writes `text` in the shared group, mentioning `bot`."""
    sent = await emulator.send_user_message(
        BOTS[bot][0],
        text=text,
        conversation_type="2",
        conversation_id=GROUP,
        sender_staff_id="user-1",
        mentioned=True,
    )
    assert sent.delivered, sent.reason


async def chat_shows(
    emulator: EmulatorThread, predicate: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The group's bot items once `predicate` holds for them (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            view = await emulator.chat_view(GROUP)
            items = [i for i in (view or {"items": []})["items"] if i["kind"] != "user"]
            if predicate(items):
                return items
            await asyncio.sleep(0.02)


def card(items: list[dict[str, Any]], word: str) -> dict[str, Any] | None:
    """The card whose text starts with `word` (each bot's answers start with its own word)."""
    return next((i for i in items if i["kind"] == "card" and i["text"].startswith(word)), None)


def showing(items: list[dict[str, Any]], word: str) -> bool:
    found = card(items, word)
    return found is not None and bool(found["text"])


def finished(items: list[dict[str, Any]], word: str) -> bool:
    found = card(items, word)
    return found is not None and bool(found["done"]) and found["flow_status"] in {"3", "5"}


def notices(items: list[dict[str, Any]]) -> list[str]:
    return [i["text"] for i in items if i["kind"] != "card"]


async def test_a_slow_answer_of_one_bot_does_not_delay_the_other(
    daemon: Daemon, emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    fake_llm.script(stalling("alpha is thinking very hard"))
    fake_llm.script_reply("bravo answers at once")
    await say(emulator, "alpha", "a hard question")
    await chat_shows(emulator, lambda items: showing(items, "alpha"))
    await say(emulator, "bravo", "an easy question")
    # one shared worker would queue bravo's question behind alpha's stalled answer
    items = await chat_shows(emulator, lambda items: finished(items, "bravo"))
    bravo = card(items, "bravo")
    assert bravo is not None and bravo["text"] == "bravo answers at once"
    assert bravo["flow_status"] == "3"
    assert not finished(items, "alpha")  # still being written
    assert notices(items) == []  # nobody was told their message is queued
    assert [r.messages[-1]["content"] for r in fake_llm.requests] == [
        "a hard question",
        "an easy question",
    ]


async def test_stop_sent_to_one_bot_stops_only_its_own_answer(
    daemon: Daemon, emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    fake_llm.script(stalling("alpha writes a long story"), stalling("bravo writes another"))
    await say(emulator, "alpha", "tell me a story")
    await chat_shows(emulator, lambda items: showing(items, "alpha"))

    await say(emulator, "bravo", "/stop")  # bravo is answering nothing
    items = await chat_shows(emulator, lambda items: bool(notices(items)))
    assert notices(items) == [NOTHING_TO_STOP_TEXT]
    assert not finished(items, "alpha")

    await say(emulator, "bravo", "tell me another")
    await chat_shows(emulator, lambda items: showing(items, "bravo"))
    await say(emulator, "bravo", "/stop")
    items = await chat_shows(emulator, lambda items: finished(items, "bravo"))
    bravo = card(items, "bravo")
    assert bravo is not None and bravo["flow_status"] == "5" and "(stopped)" in bravo["text"]
    items = await chat_shows(emulator, lambda items: len(notices(items)) == 2)
    assert notices(items) == [NOTHING_TO_STOP_TEXT, STOPPED_TEXT]
    assert not finished(items, "alpha")  # alpha goes on writing

    await say(emulator, "alpha", "/stop")
    items = await chat_shows(emulator, lambda items: finished(items, "alpha"))
    alpha = card(items, "alpha")
    assert alpha is not None and alpha["flow_status"] == "5" and "(stopped)" in alpha["text"]
    assert len(fake_llm.requests) == 2
