"""Conversation keys and commands; a burst past the queue; the daemon's cap on answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import text

from channels.commands import OVERFLOW_ERROR, OVERFLOW_TEXT, command_of
from channels.conversations import conversation_key
from channels.dingtalk.emulator import EmulatorThread
from channels.model import ChannelId, ChatType, InboundMessage, Sender
from daemon.app import Daemon
from storage import Store
from tests.agents_support import FAKE_LLM_KEY
from tests.dingtalk_support import dingtalk_emulator
from tests.e2e_support import FAST_BACKOFF, Stack, settings_for, start_stack, wait_until
from tests.test_metrics_e2e import samples, value
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator"]


def message(chat_type: ChatType, sender: str, chat: str = "cid-1") -> InboundMessage:
    return InboundMessage(
        channel_id=ChannelId("dt"),
        platform="dingtalk",
        message_id="m1",
        chat_id=chat,
        chat_type=chat_type,
        sender=Sender(sender),
        text="hi",
        received_at=datetime.now(UTC),
    )


def test_direct_chats_have_one_conversation_per_chat() -> None:
    assert conversation_key(message(ChatType.DIRECT, "u1"), "per_user") == "direct:cid-1"
    assert conversation_key(message(ChatType.DIRECT, "u1", "cid-2"), "per_user") == "direct:cid-2"


def test_groups_are_per_member_by_default_and_shared_on_request() -> None:
    alice = message(ChatType.GROUP, "alice")
    bob = message(ChatType.GROUP, "bob")
    assert conversation_key(alice, "per_user") != conversation_key(bob, "per_user")
    assert conversation_key(alice, "shared") == conversation_key(bob, "shared") == "group:cid-1"


def test_commands_are_recognised_only_at_the_start() -> None:
    assert command_of("/new") == ("/new", "")
    assert command_of("  /NEW tell me a joke") == ("/new", "tell me a joke")
    assert command_of("/help") == ("/help", "")
    assert command_of("/stop") == ("/stop", "")
    assert command_of("what does /new do?") == ("", "what does /new do?")
    assert command_of("/unknown thing") == ("", "/unknown thing")


# --- bursts and the daemon's cap on answers, end to end -------------------------------------


class GatedLLM(FakeLLM):
    """The fake LLM holding every request at a gate the test opens a permit at a time."""

    def __init__(self) -> None:
        super().__init__(api_key=FAKE_LLM_KEY)
        self._gate = asyncio.Semaphore(0)
        self.held = 0  # requests waiting at the gate now
        self.most_held = 0

    def allow(self, count: int) -> None:
        """Let `count` more requests through."""
        for _ in range(count):
            self._gate.release()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        try:
            await self._gate.acquire()
        finally:
            self.held -= 1
        return await super()._answer(request)


@pytest.fixture
async def gated_llm() -> AsyncIterator[GatedLLM]:
    server = GatedLLM()
    await server.start()
    try:
        yield server
    finally:
        server.allow(1000)
        await server.stop()


PATIENT = {"first_token_timeout": 60, "timeout": 120}


async def _journal(stack: Stack) -> list[tuple[str, str | None]]:
    store = stack.daemon.store
    assert store is not None
    async with store.engine.connect() as conn:
        rows = await conn.execute(text("SELECT state, error FROM inbound_journal ORDER BY id"))
        return [(row.state, row.error) for row in rows]


async def _journal_until(
    stack: Stack, holds: Callable[[list[tuple[str, str | None]]], bool]
) -> list[tuple[str, str | None]]:
    rows: list[tuple[str, str | None]] = []
    try:
        async with asyncio.timeout(15):
            while not holds(rows := await _journal(stack)):
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"the journal never got there: {rows}")
    return rows


def _refused(rows: list[tuple[str, str | None]]) -> int:
    return sum(error == OVERFLOW_ERROR for _, error in rows)


def _unfinished(rows: list[tuple[str, str | None]]) -> int:
    return sum(state in {"received", "replying"} for state, _ in rows)


async def _overflow_notices(stack: Stack, chat: str) -> int:
    return sum(item["text"] == OVERFLOW_TEXT for item in await stack.bot_items(chat))


async def test_a_burst_past_the_queue_gets_one_overflow_notice(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, gated_llm: GatedLLM
) -> None:
    stack = await start_stack(
        tmp_path, dingtalk_emulator, gated_llm, channel={"queue_limit": 5}, agent=PATIENT
    )
    try:
        await stack.connected()
        for n in range(20):
            sent = await stack.say(f"first burst {n}")
        chat = sent.conversation_id
        # one answer running (held by the LLM), five queued, the rest refused: the first
        # message's worker starts before the second is journaled
        rows = await _journal_until(stack, lambda r: _refused(r) == 14)
        assert (len(rows), _unfinished(rows)) == (20, 6)
        first_refused = _refused(rows)
        assert await _overflow_notices(stack, chat) == 1

        # five answers go out; the sixth is being written, with nothing queued behind it
        gated_llm.allow(5)
        await wait_until(lambda: len(gated_llm.requests) == 5 and gated_llm.held == 1)
        for n in range(20):
            await stack.say(f"second burst {n}")
        rows = await _journal_until(
            stack, lambda r: len(r) == 40 and _refused(r) == first_refused + 15
        )
        assert await _overflow_notices(stack, chat) == 2

        gated_llm.allow(1000)
        rows = await _journal_until(stack, lambda r: _unfinished(r) == 0)
        assert [state for state, _ in rows].count("replied") == 40 - _refused(rows)
        assert all(state == "failed" for state, error in rows if error == OVERFLOW_ERROR)
        assert await _overflow_notices(stack, chat) == 2
    finally:
        await stack.stop()


async def test_answers_in_progress_never_exceed_the_daemon_cap(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, gated_llm: GatedLLM
) -> None:
    settings = settings_for(tmp_path, dingtalk_emulator.url, gated_llm, agent=PATIENT)
    daemon_section = settings.daemon.model_copy(update={"max_concurrent_answers": 2})
    daemon = Daemon(settings.model_copy(update={"daemon": daemon_section}), backoff=FAST_BACKOFF)
    await daemon.start()
    stack = Stack(daemon, dingtalk_emulator, gated_llm)
    try:
        await stack.connected()
        slots = stack.daemon.answer_slots
        chats = [
            (await stack.say("hi", sender_staff_id=f"user-{n}")).conversation_id for n in range(5)
        ]
        await wait_until(lambda: slots.running == 2 and slots.waiting == 3 and gated_llm.held == 2)
        body, _ = stack.daemon.metrics.render()
        found = samples(body.decode())
        assert value(found, "channeld_answers", state="running") == 2
        assert value(found, "channeld_answers", state="waiting") == 3

        gated_llm.allow(1000)
        for chat in chats:
            await stack.wait_bot_items(
                chat, lambda i: any(x["kind"] == "card" and x["done"] for x in i)
            )
        await stack.idle()
        assert gated_llm.most_held == 2
        assert len(gated_llm.requests) == 5
        assert (slots.running, slots.waiting) == (0, 0)
    finally:
        await stack.stop()


async def test_an_answer_waiting_for_a_slot_at_shutdown_is_answered_after_restart(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, gated_llm: GatedLLM
) -> None:
    settings = settings_for(tmp_path, dingtalk_emulator.url, gated_llm, agent=PATIENT)
    daemon_section = settings.daemon.model_copy(update={"max_concurrent_answers": 1})
    settings = settings.model_copy(update={"daemon": daemon_section})
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    stack = Stack(daemon, dingtalk_emulator, gated_llm)
    try:
        await stack.connected()
        await stack.say("first", sender_staff_id="user-a")
        waiting = await stack.say("second", sender_staff_id="user-b")
        slots = daemon.answer_slots
        await wait_until(lambda: slots.running == 1 and slots.waiting == 1)
        await _journal_until(stack, lambda rows: rows[:1] == [("replying", None)])
    finally:
        await stack.stop()
    reopened = await Store.open(settings.daemon.effective_database_url)
    try:
        async with reopened.engine.connect() as conn:
            rows = await conn.execute(text("SELECT state, error FROM inbound_journal ORDER BY id"))
            states = [(row.state, row.error) for row in rows]
    finally:
        await reopened.close()
    # the answer in progress was cut short; the one that never began is left for recovery
    assert states == [("failed", "stopped"), ("received", None)]

    gated_llm.allow(1000)
    restarted = Stack(Daemon(settings, backoff=FAST_BACKOFF), dingtalk_emulator, gated_llm)
    await restarted.daemon.start()
    try:
        await restarted.wait_bot_items(
            waiting.conversation_id, lambda i: any(x["kind"] == "card" and x["done"] for x in i)
        )
    finally:
        await restarted.stop()
