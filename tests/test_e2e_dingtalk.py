"""End to end: the daemon, the DingTalk emulator (real sockets) and the fake LLM (real openai client)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agents.fake_llm import FakeLLM
from channels.dingtalk.emulator import EmulatorThread
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import dingtalk_emulator
from tests.e2e_support import fake_llm_slow, start_stack

__all__ = ["dingtalk_emulator", "fake_llm_fixture", "fake_llm_slow"]

ANSWER = "The quick brown fox jumps over the lazy dog and keeps running far away"


def cards(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if i["kind"] == "card"]


def messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if i["kind"] != "card"]


async def test_direct_message_streams_into_a_finished_card(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm_slow: FakeLLM
) -> None:
    fake_llm_slow.script_reply(ANSWER)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm_slow)
    try:
        await stack.connected()
        sent = await stack.say("hello bot")
        items = await stack.wait_bot_items(sent.conversation_id, lambda i: bool(cards(i)) and cards(i)[0]["done"])
        card = cards(items)[0]
        assert card["text"] == ANSWER
        assert card["flow_status"] == "3"
        assert messages(items) == []
        state = await dingtalk_emulator.card(card["id"])
        assert state is not None
        streamed = [u.body for u in state.history if u.kind == "stream"]
        assert len(streamed) >= 3  # at least two intermediate updates plus the final one
        assert [b["isFinalize"] for b in streamed].count(True) == 1
        texts = [b["content"] for b in streamed]
        assert all(ANSWER.startswith(t) for t in texts)
        assert texts[-1] == ANSWER
        request = fake_llm_slow.requests[-1]
        assert request.messages[-1] == {"role": "user", "content": "hello bot"}
    finally:
        await stack.stop()
