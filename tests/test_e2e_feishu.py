"""The whole daemon against the Feishu emulator and the fake LLM: the DingTalk matrix, on Feishu."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from channels.model import ChannelState
from daemon.app import Daemon
from daemon.chat import chat
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import Screen
from tests.e2e_support import FAST_BACKOFF, Stack, fake_llm_slow, settings_for, wait_until
from tests.feishu_support import (
    FEISHU_APP_ID,
    FEISHU_APP_SECRET,
    FeishuEmulatorThread,
    fast_options,
    feishu_emulator,
)
from tests.storage_support import WriteLock
from tests.test_faults import short_busy_timeout
from tests.test_metrics_e2e import samples, value
from tools.fake_llm import FakeLLM

__all__ = ["fake_llm_fixture", "fake_llm_slow", "feishu_emulator", "short_busy_timeout"]

CHANNEL = "fs"
CONTENT_PATH = "/open-apis/cardkit/v1/cards/*/elements/*/content"


def feishu_channel(url: str, **overrides: Any) -> dict[str, Any]:
    channel = {
        "id": CHANNEL,
        "type": "feishu",
        "agent": "default",
        "app_id": FEISHU_APP_ID,
        "app_secret": FEISHU_APP_SECRET,
        "domain": url,
        "card_update_interval": 0.1,
        "request_timeout": 3,
    }
    channel.update(overrides)
    return channel


class FeishuStack(Stack):
    """A daemon with one Feishu channel, and the Feishu emulator's view of the chats."""

    channel_id = CHANNEL

    async def say(self, text: str, **kwargs: Any) -> Any:
        sent = await self.emulator.send_user_message(FEISHU_APP_ID, text=text, **kwargs)
        assert sent.delivered, sent.reason
        return sent

    async def bot_items(self, conversation_id: str) -> list[dict[str, Any]]:
        view = await self.emulator.chat_view(conversation_id)
        return [i for i in (view or {"items": []})["items"] if i["kind"] != "user"]

    async def finished_card(self, chat_id: str, timeout: float = 10.0) -> dict[str, Any]:
        items = await self.wait_bot_items(chat_id, lambda i: bool(i) and i[-1].get("done"), timeout)
        assert [i["kind"] for i in items] == ["card"], items
        return items[0]


async def start_feishu(
    tmp_path: Path,
    emulator: Any,
    llm: FakeLLM | None,
    agent: dict[str, Any] | None = None,
    **overrides: Any,
) -> FeishuStack:
    settings = settings_for(
        tmp_path,
        emulator.url,
        llm,
        agent=agent,
        base_channel=feishu_channel(emulator.url, **overrides),
    )
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    return FeishuStack(daemon, emulator, llm)


@pytest.fixture
async def stack(
    tmp_path: Path, feishu_emulator: Any, fake_llm_slow: FakeLLM
) -> AsyncIterator[FeishuStack]:
    running = await start_feishu(tmp_path, feishu_emulator, fake_llm_slow)
    try:
        await running.connected()
        yield running
    finally:
        await running.stop()


async def content_calls(emulator: Any) -> list[Any]:
    return [c for c in await emulator.calls() if c.path.endswith("/content")]


# -- the happy paths -----------------------------------------------------------------------------


async def test_direct_message_streams_into_a_card_that_finishes_with_the_whole_answer(
    stack: FeishuStack,
) -> None:
    sent = await stack.say("tell me about the weather today")
    card = await stack.finished_card(sent.chat_id)
    assert card["text"] == "Echo: tell me about the weather today"
    assert card["status"] == "finished" and not card["streaming"]
    assert card["reply_to"] == sent.message_id
    updates = await content_calls(stack.emulator)
    assert len(updates) >= 2, "the answer should have been typed out in several updates"
    sequences = [c.body["sequence"] for c in updates]
    assert sequences == sorted(set(sequences))
    acks = await stack.emulator.acks(sent.frame_message_id)
    assert [a.code for a in acks] == [200]


async def test_a_split_event_is_reassembled_and_answered_once(stack: FeishuStack) -> None:
    sent = await stack.say("a question long enough to split", parts=3)
    card = await stack.finished_card(sent.chat_id)
    assert card["text"] == "Echo: a question long enough to split"
    assert len(await stack.emulator.acks(sent.frame_message_id)) == 1


async def test_group_message_is_answered_only_when_the_bot_is_mentioned(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    async with FeishuEmulatorThread(
        [(FEISHU_APP_ID, FEISHU_APP_SECRET)], group_msg_scope=True, **fast_options()
    ) as emulator:
        running = await start_feishu(tmp_path, emulator, fake_llm)
        try:
            await running.connected()
            ignored = await running.say(
                "chatting among ourselves", chat_type="group", mention_bot=False
            )
            asked = await running.say("what time is it", chat_type="group", chat_id=ignored.chat_id)
            items = await running.wait_bot_items(
                asked.chat_id, lambda i: bool(i) and i[-1].get("done")
            )
            await running.idle()
            items = await running.bot_items(asked.chat_id)
            assert len(items) == 1 and items[0]["reply_to"] == asked.message_id
            assert items[0]["text"] == "Echo: what time is it"
            assert running.metric("channeld_messages_ignored_total") == 1
        finally:
            await running.stop()


async def test_new_starts_a_fresh_conversation(stack: FeishuStack) -> None:
    assert stack.llm is not None
    first = await stack.say("remember the word apple")
    await stack.finished_card(first.chat_id)
    await stack.idle()
    await stack.say("/new")
    await stack.wait_bot_items(first.chat_id, lambda i: len(i) == 2)
    await stack.idle()
    await stack.say("what was the word?")
    await stack.wait_bot_items(first.chat_id, lambda i: len(i) == 3 and bool(i[-1].get("done")))
    requests = await stack.llm.wait_for_requests(2)
    last = requests[-1].messages
    assert not any("apple" in str(m.get("content")) for m in last)


# -- delivery guarantees -------------------------------------------------------------------------


async def test_a_redelivered_event_is_answered_once(stack: FeishuStack) -> None:
    sent = await stack.say("only once please")
    await stack.finished_card(sent.chat_id)
    await stack.idle()
    await stack.emulator.redeliver(sent.message_id, new_event_id=True)
    await stack.emulator.wait_for(lambda e: len(e.acks()) >= 2)
    await stack.idle()
    items = await stack.bot_items(sent.chat_id)
    assert len(items) == 1
    assert all(a.code == 200 for a in await stack.emulator.acks())


async def test_card_creation_failure_gives_one_plain_reply(stack: FeishuStack) -> None:
    await stack.emulator.add_fault("/open-apis/cardkit/v1/cards", code=230099, method="POST")
    sent = await stack.say("no card for me")
    items = await stack.wait_bot_items(sent.chat_id, lambda i: bool(i))
    await stack.idle()
    items = await stack.bot_items(sent.chat_id)
    assert [(i["kind"], i["msg_type"]) for i in items] == [("message", "post")]
    assert "Echo: no card for me" in items[0]["text"]


async def test_a_sequence_conflict_is_recovered_without_losing_the_final_text(
    stack: FeishuStack,
) -> None:
    await stack.emulator.add_fault(CONTENT_PATH, code=300317, method="PUT")
    sent = await stack.say("conflict in the middle of the stream")
    card = await stack.finished_card(sent.chat_id)
    assert card["text"] == "Echo: conflict in the middle of the stream"
    codes = [c.code for c in await content_calls(stack.emulator)]
    assert 300317 in codes


async def test_token_expiry_mid_stream_is_refreshed_and_the_card_completes(
    stack: FeishuStack,
) -> None:
    sent = await stack.say("a long answer that keeps streaming for a while")
    await stack.emulator.wait_for(lambda e: any(c.path.endswith("/content") for c in e.calls()))
    await stack.emulator.expire_tokens()
    card = await stack.finished_card(sent.chat_id)
    assert card["text"] == "Echo: a long answer that keeps streaming for a while"
    token_calls = await stack.emulator.calls("/open-apis/auth/v3/tenant_access_token/internal")
    assert len(token_calls) >= 2
    assert any(c.code == 99991663 for c in await stack.emulator.calls())


# -- connection faults ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["abort", "close"])
async def test_reconnects_after_the_socket_is_lost(stack: FeishuStack, mode: str) -> None:
    before = len(await stack.emulator.call(lambda e: e.discoveries(FEISHU_APP_ID)))
    await stack.emulator.drop(FEISHU_APP_ID, mode=mode)
    await wait_until(lambda: stack.supervisor.status().reconnects >= 1)
    await stack.connected()
    after = len(await stack.emulator.call(lambda e: e.discoveries(FEISHU_APP_ID)))
    assert after > before, "every reconnect asks discovery for a fresh URL"
    sent = await stack.say("still there?")
    card = await stack.finished_card(sent.chat_id)
    assert card["text"] == "Echo: still there?"


async def test_a_silent_socket_is_replaced_after_the_watchdog(
    tmp_path: Path, feishu_emulator: Any, fake_llm: FakeLLM
) -> None:
    running = await start_feishu(tmp_path, feishu_emulator, fake_llm, watchdog_seconds=1)
    try:
        await running.connected()
        await feishu_emulator.silence(FEISHU_APP_ID)
        await wait_until(lambda: running.supervisor.status().reconnects >= 1, timeout=15)
        await feishu_emulator.silence(FEISHU_APP_ID, False)
        await running.connected()
        sent = await running.say("awake again")
        await running.wait_bot_items(sent.chat_id, lambda i: bool(i) and bool(i[-1].get("done")))
    finally:
        await running.stop()


async def test_a_bad_app_secret_ends_in_failed_without_leaking_it(
    tmp_path: Path, feishu_emulator: Any, fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-secret-value-123"
    running = await start_feishu(tmp_path, feishu_emulator, fake_llm, app_secret=wrong)
    try:
        await wait_until(lambda: running.state() is ChannelState.FAILED)
        status = running.supervisor.status()
        assert status.last_error and "AuthError" in status.last_error
        assert wrong not in status.last_error
        assert wrong not in caplog.text
        attempts = len(await feishu_emulator.calls())
        await asyncio.sleep(0.3)  # a failed channel must stay quiet: no retry storm
        assert len(await feishu_emulator.calls()) == attempts
    finally:
        await running.stop()


def finished_with(text: str) -> Callable[[list[dict[str, Any]]], bool]:
    """A predicate on a chat's bot items: a finished one shows `text`."""
    return lambda items: any(text in i["text"] and i["done"] for i in items)


async def test_metrics_count_feishu_traffic(stack: FeishuStack) -> None:
    for text in ("one", "two"):
        sent = await stack.say(text)
        await stack.wait_bot_items(sent.chat_id, finished_with(text))
        await stack.idle()
    await stack.emulator.redeliver(sent.message_id, new_event_id=True)
    await stack.emulator.wait_for(lambda e: len(e.acks()) == 3)
    assert stack.daemon.admin is not None
    url = f"http://127.0.0.1:{stack.daemon.admin.port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        found = samples(await response.text())
    ch = {"channel": CHANNEL, "platform": "feishu"}
    assert value(found, "channeld_messages_received_total", **ch) == 3
    assert value(found, "channeld_messages_duplicate_total", **ch) == 1
    assert value(found, "channeld_ack_latency_seconds_count", **ch) == 3
    assert value(found, "channeld_replies_total", outcome="replied", **ch) == 2
    assert value(found, "channeld_channel_up", **ch) == 1
    streamed = value(
        found, "channeld_platform_requests_total", endpoint="cardkit.content", status="200", **ch
    )
    assert streamed == len([c for c in await content_calls(stack.emulator) if c.status == 200])


@pytest.mark.parametrize(("status", "code"), [(514, 1000040350), (403, 0)])
async def test_a_final_handshake_rejection_ends_in_failed(
    tmp_path: Path, feishu_emulator: Any, fake_llm: FakeLLM, status: int, code: int
) -> None:
    await feishu_emulator.reject_handshakes(status, code)
    running = await start_feishu(tmp_path, feishu_emulator, fake_llm)
    try:
        await wait_until(lambda: running.state() is ChannelState.FAILED)
        assert f"handshake-status {status}" in (running.supervisor.status().last_error or "")
        assert not await feishu_emulator.live_connections(FEISHU_APP_ID)
    finally:
        await running.stop()


async def test_a_busy_gateway_and_a_retryable_rejection_are_retried(
    tmp_path: Path, feishu_emulator: Any, fake_llm: FakeLLM
) -> None:
    await feishu_emulator.add_fault("/callback/ws/endpoint", code=1)  # "system busy"
    await feishu_emulator.reject_handshakes(514, 1)  # auth failed, but not the connection limit
    running = await start_feishu(tmp_path, feishu_emulator, fake_llm)
    try:
        await running.connected()
        assert running.supervisor.status().reconnects == 0
        assert len(await feishu_emulator.discoveries(FEISHU_APP_ID)) == 3
    finally:
        await running.stop()


async def test_the_gateway_config_from_a_pong_paces_the_pings(
    tmp_path: Path, feishu_emulator: Any, fake_llm: FakeLLM
) -> None:
    running = await start_feishu(tmp_path, feishu_emulator, fake_llm)
    try:
        await running.connected()
        await feishu_emulator.set_client_config(ping_interval=0.2)

        def pings(e: Any) -> int:
            return sum(c.pings for c in e.live_connections(FEISHU_APP_ID))

        # the first pong after the change carries it; from then on pings come 0.2 s apart
        await feishu_emulator.wait_for(lambda e: pings(e) >= 2, timeout=5)
        start = await feishu_emulator.call(pings)
        await feishu_emulator.wait_for(lambda e: pings(e) >= start + 5, timeout=5)
    finally:
        await running.stop()


async def test_the_ack_leaves_before_the_answer_is_written(
    tmp_path: Path, feishu_emulator: Any, fake_llm: FakeLLM
) -> None:
    fake_llm.script_reply("slow answer", first_token_delay=1.0)
    running = await start_feishu(tmp_path, feishu_emulator, fake_llm)
    try:
        await running.connected()
        sent = await running.say("take your time")
        acks = await feishu_emulator.wait_for(lambda e: e.acks(sent.frame_message_id))
        assert acks[0].latency < 0.5
        assert not any(i.get("done") for i in await running.bot_items(sent.chat_id))
        await running.wait_bot_items(sent.chat_id, lambda i: bool(i) and bool(i[-1]["done"]))
    finally:
        await running.stop()


async def test_gateway_killed_mid_stream_the_answer_still_completes_once(
    stack: FeishuStack,
) -> None:
    sent = await stack.say("a long answer while the gateway goes down and comes back")
    await stack.emulator.wait_for(lambda e: any(c.path.endswith("/content") for c in e.calls()))
    await stack.emulator.restart_gateway(FEISHU_APP_ID, downtime=0.5)
    card = await stack.finished_card(sent.chat_id)
    assert card["text"] == "Echo: a long answer while the gateway goes down and comes back"
    await wait_until(lambda: stack.supervisor.status().reconnects >= 1)
    await stack.connected()
    await stack.idle()
    assert len(await stack.bot_items(sent.chat_id)) == 1


# -- faults during a reply (README "Reliability": one answer or one clear failure) ---------------


async def test_the_llm_timing_out_mid_stream_ends_the_card_with_a_visible_failure(
    tmp_path: Path, feishu_emulator: Any, fake_llm: FakeLLM
) -> None:
    fake_llm.script_stall_mid_stream(after_tokens=3, seconds=30)
    running = await start_feishu(tmp_path, feishu_emulator, fake_llm, agent={"timeout": 1.5})
    try:
        await running.connected()
        sent = await running.say("this answer will hang halfway")
        items = await running.wait_bot_items(sent.chat_id, lambda i: bool(i) and i[-1]["done"])
        await running.idle()
        items = await running.bot_items(sent.chat_id)
        assert [i["kind"] for i in items] == ["card"]
        assert items[0]["text"].startswith("Echo: this answer")
        assert "could not answer" in items[0]["text"]
    finally:
        await running.stop()


async def test_a_429_storm_on_card_updates_keeps_the_channel_budget(
    tmp_path: Path, feishu_emulator: Any, fake_llm: FakeLLM
) -> None:
    answers = [f"answer {n} " + " ".join(f"w{n}.{i}" for i in range(30)) for n in range(4)]
    for answer in answers:
        fake_llm.script_reply(answer, token_interval=0.03)
    await feishu_emulator.add_fault(CONTENT_PATH, 429, code=99991400, times=8, method="PUT")
    rate = 4.0
    running = await start_feishu(tmp_path, feishu_emulator, fake_llm, card_updates_per_second=rate)
    try:
        await running.connected()
        sent = [await running.say(f"question {n}", sender_open_id=f"ou_user{n}") for n in range(4)]
        shown = []
        for message in sent:
            items = await running.wait_bot_items(
                message.chat_id, lambda i: bool(i) and i[-1]["done"], timeout=30
            )
            assert [i["kind"] for i in items] == ["card"]
            shown.append(items[0]["text"])
        # the scripted answers go to whichever request comes first: compare as sets
        assert sorted(shown) == sorted(answers)
        calls = [c for c in await feishu_emulator.calls() if "/cardkit/v1/cards/" in c.path]
        assert any(c.status == 429 for c in calls)
        times = sorted(c.at for c in calls)
        # a token bucket of `rate` per second with a burst of `rate`: no window of w seconds
        # holds more than rate * (w + 1) calls (one spare for the clock's granularity)
        for window in (1.0, 2.0):
            busiest = max(sum(1 for t in times if start <= t < start + window) for start in times)
            assert busiest <= rate * (window + 1) + 1, (window, busiest)
    finally:
        await running.stop()


async def test_the_token_endpoint_failing_during_a_reply(stack: FeishuStack) -> None:
    sent = await stack.say("keep going while the token service is down for a moment")
    await stack.emulator.wait_for(lambda e: any(c.path.endswith("/content") for c in e.calls()))
    await stack.emulator.add_fault("/open-apis/auth/v3/tenant_access_token/internal", 500, times=2)
    await stack.emulator.expire_tokens()
    card = await stack.finished_card(sent.chat_id, timeout=30)
    assert card["text"] == "Echo: keep going while the token service is down for a moment"
    token_calls = await stack.emulator.calls("/open-apis/auth/v3/tenant_access_token/internal")
    assert [c.status for c in token_calls][-3:] == [500, 500, 200]
    await stack.idle()
    assert len(await stack.bot_items(sent.chat_id)) == 1


async def test_a_locked_database_acks_500_and_feishus_redelivery_is_answered_once(
    tmp_path: Path,
    feishu_emulator: Any,
    fake_llm: FakeLLM,
    short_busy_timeout: int,
) -> None:
    running = await start_feishu(tmp_path, feishu_emulator, fake_llm)
    lock = WriteLock(tmp_path / "channeld.db")
    try:
        await running.connected()
        await running.idle()
        await lock.take()
        sent = await running.say("are you there?")
        first = await feishu_emulator.wait_for(lambda e: e.acks(sent.frame_message_id))
        assert [a.code for a in first] == [500]  # not journaled: Feishu must push it again
        assert running.state() is ChannelState.CONNECTED
        await lock.release()
        # the emulator's own schedule (FAST_REDELIVERY) brings it back, with a new event_id
        items = await running.wait_bot_items(
            sent.chat_id, lambda i: bool(i) and i[-1]["done"], timeout=15
        )
        await running.idle()
        items = await running.bot_items(sent.chat_id)
        assert [(i["kind"], i["text"]) for i in items] == [("card", "Echo: are you there?")]
        codes = [a.code for a in await feishu_emulator.acks()]
        assert codes[0] == 500 and codes[-1] == 200
        assert running.supervisor.status().reconnects == 0
        assert len(fake_llm.requests) == 1
    finally:
        await lock.release()
        await running.stop()


async def test_a_card_reply_whose_answer_is_lost_is_retried_without_a_second_card(
    tmp_path: Path, feishu_emulator: Any, fake_llm: FakeLLM
) -> None:
    running = await start_feishu(tmp_path, feishu_emulator, fake_llm, request_timeout=1)
    try:
        await running.connected()
        # the first reply is still in flight when the client gives up waiting for it
        await feishu_emulator.add_fault(
            "/open-apis/im/v1/messages/*/reply", delay=1.5, method="POST"
        )
        sent = await running.say("did my card arrive?")
        await running.wait_bot_items(sent.chat_id, lambda i: bool(i) and i[-1]["done"])
        await running.idle()
        items = await running.bot_items(sent.chat_id)
        # without the retry the answer would have fallen back to a post message
        assert [(i["kind"], i["text"]) for i in items] == [("card", "Echo: did my card arrive?")]
    finally:
        await running.stop()


async def test_an_answer_longer_than_a_card_continues_in_post_messages(
    tmp_path: Path, feishu_emulator: Any, fake_llm: FakeLLM
) -> None:
    paragraph = " ".join(f"word{i}" for i in range(40)) + ".\n\n"
    tokens = [paragraph] * 120  # about 36 KB, more than one card holds
    fake_llm.script_reply(tokens=tokens, token_interval=0.005)
    running = await start_feishu(tmp_path, feishu_emulator, fake_llm)
    try:
        await running.connected()
        sent = await running.say("write me a very long essay")
        await running.wait_bot_items(sent.chat_id, lambda i: len(i) >= 2, timeout=20)
        await running.idle()
        items = await running.bot_items(sent.chat_id)
        card, *posts = items
        assert card["kind"] == "card" and card["done"]
        assert posts and all(p["kind"] == "message" and p["msg_type"] == "post" for p in posts)
        assert len(card["text"].encode()) <= 30_000
        assert posts[0]["text"].startswith("(continued)")
        shown = card["text"] + "".join(p["text"].removeprefix("(continued)") for p in posts)
        assert shown.split() == "".join(tokens).split()  # every word once, in order
    finally:
        await running.stop()


async def test_channeld_chat_talks_to_the_daemon_through_the_feishu_emulator(
    tmp_path: Path, feishu_emulator: Any
) -> None:
    running = await start_feishu(tmp_path, feishu_emulator, None)  # the echo agent
    screen = Screen()

    async def lines() -> AsyncIterator[str]:
        yield "hello from the terminal\n"
        yield "/quit\n"

    try:
        await running.connected()
        code = await chat(feishu_emulator.url, None, lines=lines(), out=screen, tty=False)
    finally:
        await running.stop()
    assert code == 0
    assert "bot> You said: hello from the terminal" in screen.getvalue()
