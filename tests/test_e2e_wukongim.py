"""WuKongIM end to end: the emulator's webhook pusher, the daemon's callback listener and
WuKongIM channel, the fake LLM, and the answer as a WuKongIM client shows it."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest

from channels.wukongim.emulator import WuKongIMEmulator, WuKongIMEmulatorThread
from channels.wukongim.emulator.messaging import EventRecord
from tests.agents_support import fake_llm_fixture
from tests.e2e_support import fake_llm_slow, wait_until
from tests.webhook_e2e_support import WebhookStack, context_then_new, user_turns, webhook_stack
from tests.wukongim_support import BOT, FAST
from tools.fake_llm import FakeLLM

__all__ = ["fake_llm_fixture", "fake_llm_slow"]

CHANNEL = "wk"
KEY = "wk-webhook-key-0123456789"


@pytest.fixture
async def wk_emulator() -> AsyncIterator[WuKongIMEmulatorThread]:
    """A local WuKongIM pushing every 50 ms; the daemon tells it where once it listens."""
    async with WuKongIMEmulatorThread(webhook="", **FAST) as emulator:
        yield emulator


class WuKongIMStack(WebhookStack):
    """A daemon with one WuKongIM channel on the emulator, its webhook pointed at the daemon."""

    channel_id = CHANNEL
    platform = "wukongim"
    credentials: ClassVar[dict[str, Any]] = {"bot_uid": BOT, "webhook_key": KEY}
    bot, user_field, user = BOT, "from_uid", "u1"

    async def aim(self) -> None:
        await self.emulator.set_webhook(f"{self.hooks}/{CHANNEL}?key={KEY}")


def finished(items: list[dict[str, Any]]) -> bool:
    return bool(items) and all(i["kind"] != "card" or i["done"] for i in items)


def running(
    tmp_path: Path, emulator: WuKongIMEmulatorThread, llm: FakeLLM | None, **channel: Any
) -> AbstractAsyncContextManager[WuKongIMStack]:
    return webhook_stack(WuKongIMStack, tmp_path, emulator, llm, **channel)


@pytest.fixture
async def wk_stack(
    tmp_path: Path, wk_emulator: WuKongIMEmulatorThread, fake_llm_slow: FakeLLM
) -> AsyncIterator[WuKongIMStack]:
    async with running(tmp_path, wk_emulator, fake_llm_slow) as stack:
        await stack.connected()
        yield stack


async def test_a_direct_message_is_answered_as_one_streamed_message(
    wk_stack: WuKongIMStack, fake_llm_slow: FakeLLM
) -> None:
    sent = await wk_stack.say("tell me a long story about streams")
    items = await wk_stack.answered(sent.chat_id, finished)
    (card,) = items
    assert card["kind"] == "card"
    assert card["text"] == "Echo: tell me a long story about streams"
    assert card["status"] == "finished" and not card["error"]

    def finish_pushed(e: WuKongIMEmulator) -> list[EventRecord] | None:
        # `done` comes with stream.close; stream.finish follows on its own key
        found = e.events(card["client_msg_no"])
        return found if any(f.event_type == "stream.finish" for f in found) else None

    events = await wk_stack.emulator.wait_for(finish_pushed)
    kinds = [e.event_type for e in events]
    assert kinds.count("stream.delta") >= 2, kinds  # it typed, not one block at the end
    assert kinds[-1] == "stream.finish"
    assert all(e.anchored for e in events)  # never an event without its anchor
    assert (
        "".join(e.payload["delta"] for e in events if e.event_type == "stream.delta")
        == (card["text"])
    )
    assert len(fake_llm_slow.requests) == 1


async def test_three_users_in_one_batch_are_each_answered(
    wk_stack: WuKongIMStack, fake_llm_slow: FakeLLM
) -> None:
    await wk_stack.emulator.pause_webhook(True)
    sent = [await wk_stack.say(f"question {n}", user=f"u{n}") for n in range(3)]
    await wk_stack.emulator.pause_webhook(False)
    await wk_stack.emulator.flush_webhook()
    for n, message in enumerate(sent):
        (card,) = await wk_stack.answered(message.chat_id, finished)
        assert card["text"] == f"Echo: question {n}"
    pushes = await wk_stack.emulator.pushes()
    user_ids = {m.message_id for m in sent}
    batches = [p for p in pushes if user_ids & set(p.message_ids)]
    assert len(batches) == 1 and batches[0].status == 200  # all three in one callback
    assert wk_stack.metric("channeld_callbacks_total", outcome="ok", reason="") >= 1


async def test_a_message_redelivered_three_times_is_answered_once(
    wk_stack: WuKongIMStack, fake_llm_slow: FakeLLM
) -> None:
    sent = await wk_stack.say("only once please")
    await wk_stack.answered(sent.chat_id, finished)
    await wk_stack.emulator.redeliver([sent.message_id])
    await wk_stack.emulator.redeliver([sent.message_id])
    other = await wk_stack.say("a new one", user="u2")  # rides in the same batch as the third
    await wk_stack.emulator.redeliver([sent.message_id])
    await wk_stack.answered(other.chat_id, finished)
    await wait_until(lambda: wk_stack.metric("channeld_messages_duplicate_total") >= 3)
    await wk_stack.idle()
    assert len(await wk_stack.bot_items(sent.chat_id)) == 1
    assert sorted(user_turns(fake_llm_slow)) == ["a new one", "only once please"]


async def test_the_bots_own_echo_causes_no_llm_call(
    wk_stack: WuKongIMStack, fake_llm_slow: FakeLLM
) -> None:
    sent = await wk_stack.say("hello")
    await wk_stack.answered(sent.chat_id, finished)
    # the server pushes the bot's anchor back to the webhook, like every stored message
    await wait_until(
        lambda: wk_stack.metric("channeld_callbacks_total", outcome="ignored", reason="") >= 1
    )
    pushes = await wk_stack.emulator.pushes()
    echoed = [m for p in pushes for m in p.body if m.get("from_uid") == BOT]
    assert echoed and all(p.status == 200 for p in pushes)
    assert wk_stack.metric("channeld_messages_ignored_total") >= len(echoed)
    await wk_stack.idle()
    assert len(fake_llm_slow.requests) == 1


async def test_a_group_message_is_answered_only_when_it_mentions_the_bot(
    wk_stack: WuKongIMStack, fake_llm_slow: FakeLLM
) -> None:
    quiet = await wk_stack.say("just chatting", group=True, mention=False, group_id="team")
    asked = await wk_stack.say("bot, a question", group=True, mention=True, group_id="team")
    assert quiet.chat_id == asked.chat_id
    items = await wk_stack.answered(asked.chat_id, finished)
    assert [i["text"] for i in items] == ["Echo: bot, a question"]
    await wk_stack.idle()
    assert len(fake_llm_slow.requests) == 1


async def test_context_is_kept_and_new_starts_afresh(
    wk_stack: WuKongIMStack, fake_llm_slow: FakeLLM
) -> None:
    await context_then_new(wk_stack, fake_llm_slow)


async def test_an_event_api_that_refuses_gives_one_plain_answer(
    wk_stack: WuKongIMStack, fake_llm_slow: FakeLLM
) -> None:
    await wk_stack.emulator.add_fault("/message/event", 404, times=None)
    sent = await wk_stack.say("no streaming here")
    items = await wk_stack.answered(
        sent.chat_id, lambda items: any(i["kind"] == "message" for i in items)
    )
    await wk_stack.idle()
    items = await wk_stack.bot_items(sent.chat_id)
    shown = [i for i in items if i["text"]]
    assert [(i["kind"], i["text"]) for i in shown] == [("message", "Echo: no streaming here")]


async def test_a_server_without_the_event_stream_is_answered_with_messages(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    async with (
        WuKongIMEmulatorThread(webhook="", version="v2.1.5-20250424", **FAST) as emulator,
        running(tmp_path, emulator, fake_llm) as stack,
    ):
        await stack.connected()
        sent = await stack.say("old server")
        items = await stack.answered(sent.chat_id, bool)
        assert [(i["kind"], i["text"]) for i in items] == [("message", "Echo: old server")]
        assert await emulator.calls("/message/event") == []  # never anchored, never tried


async def test_a_wrong_token_fails_the_channel_with_a_clear_error(tmp_path: Path) -> None:
    async with (
        WuKongIMEmulatorThread(webhook="", token="the-right-token", **FAST) as emulator,
        running(tmp_path, emulator, None, token="a-wrong-token") as stack,
    ):
        error = await stack.failed()
        assert "401" in error or "token" in error.lower(), error
        assert "a-wrong-token" not in error and "the-right-token" not in error


async def test_callbacks_without_the_key_or_with_bad_bodies_are_refused(
    wk_stack: WuKongIMStack,
) -> None:
    async def post(path: str, body: bytes) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{wk_stack.hooks}/{path}",
                data=io.BytesIO(body),
                headers={"Content-Type": "application/json"},
            ) as response,
        ):
            return response.status

    good = f"{CHANNEL}?key={KEY}&event=msg.notify"
    assert await post(f"{CHANNEL}?event=msg.notify", b"[]") == 401
    assert await post(f"{CHANNEL}?key=wrong-key-0123456789&event=msg.notify", b"[]") == 401
    assert await post(good, b"[{") == 400
    assert await post(good, b"[" + b" " * 2_000_000 + b"]") == 413
    assert await post(f"nobody?key={KEY}&event=msg.notify", b"[]") == 404
    assert await post(good, b"[]") == 200
    assert wk_stack.metric("channeld_callbacks_total", outcome="rejected", reason="key") == 2
