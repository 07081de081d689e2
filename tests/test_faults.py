"""The fault suite: the whole daemon against the DingTalk emulator and the fake LLM, under faults.

Every case asserts, for every user message, exactly one complete answer or exactly one clear
failure notice: never two answers, nothing lost.

| fault | tested in |
|---|---|
| socket reset, SYSTEM disconnect | test_dingtalk_connection: reconnects_after_a_dropped_socket... |
| silent (zombie) socket | test_dingtalk_connection: a_silent_socket_is_replaced... |
| open call failing, credentials rejected | test_dingtalk_connection: transient_open_failures..., |
| | rejected_credentials... |
| garbage frames on a live session | test_fuzz_frames; test_dingtalk_connection: garbage_frames... |
| one redelivery (same or new frame) | test_e2e_dingtalk: redelivered_message_is_answered_once |
| a few 429s on card updates | test_e2e_dingtalk: card_updates_hitting_429... |
| card creation or streaming refused (403) | test_e2e_dingtalk: card_creation_refused..., |
| | streaming_permission_missing... |
| LLM 5xx, LLM down | test_e2e_dingtalk: llm_500_is_retried_and_llm_down... |
| sessionWebhook expired mid-answer | test_e2e_dingtalk: expired_session_webhook... |
| SIGKILL mid-reply, restart | test_crash_recovery |
| gateway killed and restarted while a card streams | here (a) |
| one message redelivered three times over a minute, a restart between | here (b) |
| LLM stalls past the agent timeout mid-stream | here (c) |
| 429 storm on card updates, several replies at once | here (d) |
| SQLite write lock held past the busy timeout, at arrival and mid-reply | here (e) |
| token endpoint failing while a card streams on an expired token | here (f) |

(b) makes a minute pass by back-dating the journal rows in the database rather than by an
injected clock: the daemon reads "how old is this message" only from those rows (recovery's
freshness window, journal pruning), so aging the rows is what a minute does to it, while every
timer in the daemon (emitter pacing, backoff, token expiry) keeps real time.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from channels.dingtalk.emulator import EmulatorThread
from channels.model import ChannelState
from storage import engine as storage_engine
from storage.models import InboundJournal
from storage.repository import Store
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import DINGTALK_CLIENT_ID, dingtalk_emulator
from tests.e2e_support import Stack, fake_llm_slow, start_stack, wait_until
from tests.storage_support import WriteLock
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture", "fake_llm_slow"]

LONG_ANSWER = " ".join(f"word{n}" for n in range(40))  # ~1.2 s of tokens from fake_llm_slow
STREAMING = "/v1.0/card/streaming"
RECEIVED = "channeld_messages_received_total"
DUPLICATES = "channeld_messages_duplicate_total"


def cards(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if i["kind"] == "card"]


def messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if i["kind"] != "card"]


def finished(card: dict[str, Any]) -> bool:
    """Streaming closed and the card's status set: the last two calls of a reply."""
    return bool(card["done"]) and card["flow_status"] in {"3", "5"}


def all_finished(count: int) -> Any:
    return lambda items: len(cards(items)) == count and all(finished(c) for c in cards(items))


async def streaming_started(stack: Stack, conversation_id: str) -> None:
    await stack.wait_bot_items(conversation_id, lambda i: bool(cards(i)) and cards(i)[0]["text"])


# -- (a) the gateway dies and comes back while a card streams ------------------------------------


async def test_gateway_outage_mid_stream_loses_and_repeats_nothing(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm_slow: FakeLLM
) -> None:
    fake_llm_slow.script_reply(LONG_ANSWER)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm_slow)
    try:
        await stack.connected()
        first = await stack.say("tell me a story")
        await streaming_started(stack, first.conversation_id)

        cut = await dingtalk_emulator.call(lambda e: e.gateway_outage(True))
        assert cut == 1
        await wait_until(lambda: stack.state() is not ChannelState.CONNECTED)
        # written while the gateway is down: DingTalk holds it for the app's next connection
        held = await dingtalk_emulator.send_user_message(DINGTALK_CLIENT_ID, text="still there?")
        assert not held.delivered and "held" in held.reason
        # reconnect attempts are refused while it is down, and the card keeps streaming
        await dingtalk_emulator.wait_for(
            lambda e: (
                len([c for c in e.calls("/v1.0/gateway/connections/open") if c.status == 503]) >= 2
            ),
            10,
        )
        await dingtalk_emulator.call(lambda e: e.gateway_outage(False))

        await stack.connected()
        await dingtalk_emulator.wait_for(lambda e: e.acks(held.frame_message_id), 10)
        items = await stack.wait_bot_items(first.conversation_id, all_finished(2), 15)
        await stack.idle()
        items = await stack.bot_items(first.conversation_id)
        assert [c["text"] for c in cards(items)] == [LONG_ANSWER, "Echo: still there?"]
        assert [c["flow_status"] for c in cards(items)] == ["3", "3"]
        # at most the notice that the second message waits for the first answer
        notices = [m["text"] for m in messages(items)]
        assert len(notices) <= 1 and all("after the current reply" in n for n in notices)
        assert len(fake_llm_slow.requests) == 2
        assert len(await dingtalk_emulator.acks(first.frame_message_id)) == 1
        assert len(await dingtalk_emulator.acks(held.frame_message_id)) == 1
        assert stack.supervisor.status().reconnects == 1
    finally:
        await stack.stop()


# -- (b) the same message three more times over a minute, a restart in between -------------------


async def age_journal(store: Store, seconds: float) -> None:
    """Every journal row becomes `seconds` older, as if that much time had passed."""
    shift = timedelta(seconds=seconds)
    # BEGIN IMMEDIATE, like the daemon's own writers: a read that later upgrades to a write fails
    # at once (no busy wait) when the daemon wrote in between, e.g. recovery right after a start
    writer = store.engine.execution_options(**{storage_engine.WRITE_OPTION: True})
    async with AsyncSession(writer, expire_on_commit=False) as session:
        rows = (await session.exec(select(InboundJournal))).all()
        for row in rows:
            row.created_at -= shift
            row.updated_at -= shift
            session.add(row)
        await session.commit()


async def test_three_redeliveries_over_a_minute_are_answered_once(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm_slow: FakeLLM
) -> None:
    fake_llm_slow.script_reply(LONG_ANSWER)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm_slow)
    try:
        await stack.connected()
        sent = await stack.say("answer me once")
        await streaming_started(stack, sent.conversation_id)
        # t = 0 s: the identical frame while the answer streams (as after a late ack)
        await dingtalk_emulator.call(lambda e: e.redeliver(sent.frame_message_id))
        await dingtalk_emulator.wait_for(lambda e: len(e.acks(sent.frame_message_id)) == 2)
        await stack.wait_bot_items(sent.conversation_id, all_finished(1))
        await stack.idle()

        # t = 30 s: the same msgId under a new frame id, as after a reconnect
        assert stack.daemon.store is not None
        await age_journal(stack.daemon.store, 30)
        again = await stack.say("answer me once", extra={"msgId": sent.msg_id})
        await dingtalk_emulator.wait_for(lambda e: e.acks(again.frame_message_id))
        assert stack.metric(DUPLICATES) == 2
    finally:
        await stack.stop()

    # t = 60 s: the daemon restarted in between; recovery must not answer it again either
    restarted = await start_stack(tmp_path, dingtalk_emulator, fake_llm_slow)
    try:
        assert restarted.daemon.store is not None
        await age_journal(restarted.daemon.store, 30)
        await restarted.connected()
        await dingtalk_emulator.call(lambda e: e.redeliver(sent.frame_message_id))
        await dingtalk_emulator.wait_for(lambda e: len(e.acks(sent.frame_message_id)) == 3)
        await restarted.idle()
        # the one message this daemon received was the redelivery: nothing new was journaled
        assert restarted.metric(RECEIVED) == restarted.metric(DUPLICATES) == 1
        items = await restarted.bot_items(sent.conversation_id)
        assert [c["text"] for c in cards(items)] == [LONG_ANSWER]
        assert messages(items) == []
        assert len(fake_llm_slow.requests) == 1
        entries = await restarted.daemon.store.journal_unfinished()
        assert entries == []
    finally:
        await restarted.stop()


# -- (c) the LLM stalls mid-stream past the agent's timeout ---------------------------------------


async def test_llm_timeout_mid_stream_ends_the_card_with_one_visible_failure(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    fake_llm.script_stall_mid_stream(after_tokens=3, seconds=30)
    fake_llm.script_reply("the next answer")
    stack = await start_stack(
        tmp_path, dingtalk_emulator, fake_llm, agent={"timeout": 1.5, "first_token_timeout": 1.0}
    )
    try:
        await stack.connected()
        sent = await stack.say("this will hang")
        items = await stack.wait_bot_items(sent.conversation_id, all_finished(1), 15)
        await stack.idle()
        items = await stack.bot_items(sent.conversation_id)
        (card,) = cards(items)
        assert card["flow_status"] == "5"
        partial, _, note = card["text"].partition("\n\n")
        assert partial and "this will hang".startswith(partial.removeprefix("Echo: ").strip())
        assert "could not answer" in note
        assert messages(items) == []
        assert len(fake_llm.requests) == 1  # tokens were shown: not retried behind the user's back

        # the conversation carries on
        await stack.say("and now?")
        items = await stack.wait_bot_items(sent.conversation_id, all_finished(2))
        assert cards(items)[1]["text"] == "the next answer"
    finally:
        await stack.stop()


# -- (d) a 429 storm while several cards stream ----------------------------------------------------


def most_in_window(times: list[float], window: float) -> int:
    """The largest number of timestamps inside any `window`-second interval."""
    times = sorted(times)
    best = 0
    for i, start in enumerate(times):
        best = max(best, sum(1 for t in times[i:] if t - start < window))
    return best


async def test_429_storm_completes_every_reply_within_the_channel_budget(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm_slow: FakeLLM
) -> None:
    rate, storm = 4.0, 6
    answer = " ".join(f"token{n}" for n in range(80))  # 2.4 s of tokens
    stack = await start_stack(
        tmp_path,
        dingtalk_emulator,
        fake_llm_slow,
        channel={"card_updates_per_second": rate, "card_update_interval": 0.05},
    )
    try:
        await stack.connected()
        users = [f"user-{n}" for n in range(4)]
        for user in users:
            fake_llm_slow.script_reply(f"{user}: {answer}")
        # four replies that each want an update every 50 ms: far more than the budget allows
        sent = [await stack.say(f"hello from {user}", sender_staff_id=user) for user in users]
        # the storm begins once the budget has been spent at full rate for a while
        await dingtalk_emulator.wait_for(lambda e: len(e.calls(STREAMING)) >= 8, 10)
        await dingtalk_emulator.add_fault(STREAMING, 429, times=storm, retry_after=0.2)
        for message in sent:
            await stack.wait_bot_items(message.conversation_id, all_finished(1), 40)
        await stack.idle()

        texts = set()
        for message in sent:
            items = await stack.bot_items(message.conversation_id)
            (card,) = cards(items)
            assert card["flow_status"] == "3"
            assert messages(items) == []
            texts.add(card["text"])
        assert texts == {f"{user}: {answer}" for user in users}

        calls = await dingtalk_emulator.calls(STREAMING)
        assert [c.status for c in calls].count(429) == storm
        # One bucket token per streaming call, `burst` = round(rate) of them saved up at start.
        # The margin of two absorbs calls bunched by a busy machine on their way to the emulator.
        times = [c.at for c in calls]
        burst = round(rate)
        assert most_in_window(times, 2.0) <= burst + 2 * rate + 2
        assert len(times) <= burst + rate * (max(times) - min(times)) + 2
    finally:
        await stack.stop()


# -- (e) SQLite: another connection holds the write lock past the busy timeout -------------------


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> int:
    """New SQLite connections wait 200 ms for a lock instead of 5 s."""
    monkeypatch.setattr(storage_engine, "SQLITE_BUSY_TIMEOUT_MS", 200)
    return 200


async def test_a_locked_database_leaves_the_message_unacked_until_it_can_be_journaled(
    tmp_path: Path,
    dingtalk_emulator: EmulatorThread,
    fake_llm: FakeLLM,
    short_busy_timeout: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm)
    lock = WriteLock(tmp_path / "channeld.db")
    try:
        await stack.connected()
        await stack.idle()
        await lock.take()
        sent = await stack.say("are you there?")
        await wait_until(lambda: "left unacked" in caplog.text, 10)
        assert await dingtalk_emulator.acks(sent.frame_message_id) == []
        # a storage hiccup is not a connection problem: the session stays up for the redelivery
        assert stack.state() is ChannelState.CONNECTED
        assert stack.supervisor.status().reconnects == 0

        await lock.release()
        # DingTalk delivers an unacked message again
        await dingtalk_emulator.call(lambda e: e.redeliver(sent.frame_message_id))
        acks = await dingtalk_emulator.wait_for(lambda e: e.acks(sent.frame_message_id))
        assert len(acks) == 1
        # not a redelivery of something journaled: the first delivery never reached the journal
        assert stack.metric(DUPLICATES) == 0
        items = await stack.wait_bot_items(sent.conversation_id, all_finished(1))
        await stack.idle()
        items = await stack.bot_items(sent.conversation_id)
        assert [c["text"] for c in cards(items)] == ["Echo: are you there?"]
        assert messages(items) == []
        assert len(fake_llm.requests) == 1
    finally:
        await lock.release()
        await stack.stop()


async def test_a_lock_held_while_a_card_streams_does_not_cut_the_answer_or_repeat_it(
    tmp_path: Path,
    dingtalk_emulator: EmulatorThread,
    fake_llm_slow: FakeLLM,
    short_busy_timeout: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    fake_llm_slow.script_reply(LONG_ANSWER)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm_slow)
    lock = WriteLock(tmp_path / "channeld.db")
    try:
        await stack.connected()
        sent = await stack.say("a long one, please")
        await streaming_started(stack, sent.conversation_id)
        await lock.take()
        # the model finishes while the lock is held: progress and outcome cannot be written
        await fake_llm_slow.wait_idle()
        await wait_until(lambda: "could not record" in caplog.text, 10)
        await lock.release()

        items = await stack.wait_bot_items(sent.conversation_id, all_finished(1))
        await stack.idle()
        assert stack.daemon.store is not None
        assert await stack.daemon.store.journal_unfinished() == []  # nothing to redo at restart
        items = await stack.bot_items(sent.conversation_id)
        assert [c["text"] for c in cards(items)] == [LONG_ANSWER]
        assert messages(items) == []

        # the answer's turn made it into the conversation
        await stack.say("and then?")
        await stack.wait_bot_items(sent.conversation_id, all_finished(2))
        history = fake_llm_slow.requests[-1].messages
        assert [m["content"] for m in history if m["role"] == "assistant"] == [LONG_ANSWER]
    finally:
        await lock.release()
        await stack.stop()


# -- (f) the token endpoint fails while a card streams on an expired token -----------------------


async def test_token_endpoint_outage_mid_stream_still_completes_the_card_once(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm_slow: FakeLLM
) -> None:
    token_path = "/v1.0/oauth2/accessToken"
    fake_llm_slow.script_reply(LONG_ANSWER)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm_slow)
    try:
        await stack.connected()
        sent = await stack.say("keep going")
        await streaming_started(stack, sent.conversation_id)
        await dingtalk_emulator.add_fault(token_path, 503, times=None)
        await dingtalk_emulator.expire_tokens()
        # the model finishes while no token can be had: the final text waits and is retried
        await fake_llm_slow.wait_idle()
        await dingtalk_emulator.wait_for(
            lambda e: len([c for c in e.calls(token_path) if c.status == 503]) >= 3, 15
        )
        await dingtalk_emulator.call(lambda e: e.clear_faults())

        items = await stack.wait_bot_items(sent.conversation_id, all_finished(1), 30)
        await stack.idle()
        items = await stack.bot_items(sent.conversation_id)
        (card,) = cards(items)
        assert card["text"] == LONG_ANSWER
        assert card["flow_status"] == "3"
        assert messages(items) == []
        statuses = [c.status for c in await dingtalk_emulator.calls(token_path)]
        assert statuses[-1] == 200 and statuses.count(503) >= 3
        assert len(fake_llm_slow.requests) == 1
    finally:
        await stack.stop()
