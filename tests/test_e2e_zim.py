"""ZEGO ZIM end to end: the emulator's signed callbacks, the daemon's callback listener and ZIM
channel, the fake LLM, and the robot's message as a ZIM client shows it, edits included."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest

from channels.tail import CONTINUED
from channels.zim.emulator import ZimEmulatorThread
from channels.zim.emulator.signing import callback_signature
from tests.agents_support import fake_llm_fixture
from tests.e2e_support import fake_llm_slow, wait_until
from tests.webhook_e2e_support import WebhookStack, context_then_new, says, webhook_stack
from tests.zim_support import APP_ID, FAST, ROBOT, SECRET
from tools.fake_llm import FakeLLM

__all__ = ["fake_llm_fixture", "fake_llm_slow"]

CHANNEL = "zim-main"


class ZimStack(WebhookStack):
    """A daemon with one ZIM channel on the emulator, whose callbacks go to the daemon."""

    channel_id = CHANNEL
    platform = "zim"
    credentials: ClassVar[dict[str, Any]] = {
        "app_id": int(APP_ID),
        "server_secret": SECRET,
        "robot_id": ROBOT,
    }
    bot, user_field, user = ROBOT, "from_user_id", "user_1"

    def is_bot(self, item: dict[str, Any]) -> bool:
        return bool(item["kind"] == "card")

    async def post(self, body: dict[str, Any]) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.hooks}/{CHANNEL}", json=body) as response,
        ):
            return response.status


def running(
    tmp_path: Path, emulator: ZimEmulatorThread, llm: FakeLLM | None, **channel: Any
) -> AbstractAsyncContextManager[ZimStack]:
    return webhook_stack(ZimStack, tmp_path, emulator, llm, **channel)


@pytest.fixture
async def zim_emulator() -> AsyncIterator[ZimEmulatorThread]:
    async with ZimEmulatorThread(callback="", **FAST) as emulator:
        yield emulator


@pytest.fixture
async def zim_stack(
    tmp_path: Path, zim_emulator: ZimEmulatorThread, fake_llm_slow: FakeLLM
) -> AsyncIterator[ZimStack]:
    async with running(tmp_path, zim_emulator, fake_llm_slow) as stack:
        await stack.connected()
        yield stack


async def test_a_direct_message_is_answered_in_one_message_edited_as_it_grows(
    zim_stack: ZimStack, fake_llm_slow: FakeLLM
) -> None:
    (robot,) = await zim_stack.emulator.robots()
    assert robot.registered  # RobotRegister at start
    sent = await zim_stack.say("tell me a long story about edits")
    (item,) = await zim_stack.answered(sent.chat_id, says("Echo: tell me a long story about edits"))
    await zim_stack.idle()
    message = await zim_stack.emulator.message(item["id"])
    assert message is not None and message.receiver == "user_1"
    assert len(message.texts) >= 3, message.texts  # posted, edited, edited to the end
    assert all(b.startswith(a) for a, b in zip(message.texts, message.texts[1:], strict=False))
    actions = [c.action for c in await zim_stack.emulator.calls()]
    assert actions.count("RobotRegister") == 1 and actions.count("SendPeerMessage") == 1
    assert len(fake_llm_slow.requests) == 1


async def test_the_robots_echoes_cause_no_llm_call(
    zim_stack: ZimStack, fake_llm_slow: FakeLLM
) -> None:
    sent = await zim_stack.say("hello")
    await zim_stack.answered(sent.chat_id, says("Echo: hello"))
    await zim_stack.idle()
    # the server calls back every send and edit of the robot (source 1), answered 2xx
    echoes = await zim_stack.emulator.wait_for(
        lambda e: [a for a in e.callback_attempts() if a.body.get("from_user_id") == ROBOT]
    )
    await wait_until(
        lambda: (
            zim_stack.metric("channeld_callbacks_total", outcome="ignored", reason="")
            >= len(echoes)
        )
    )
    assert all(a.ok for a in await zim_stack.emulator.callback_attempts())
    await zim_stack.idle()
    assert len(fake_llm_slow.requests) == 1


async def test_both_callbacks_and_a_redelivery_are_answered_once(
    zim_stack: ZimStack, fake_llm_slow: FakeLLM
) -> None:
    sent = await zim_stack.say("only once please", callback="both")
    await zim_stack.answered(sent.chat_id, says("Echo: only once please"))
    await zim_stack.say("", message_id=sent.message_id)  # new nonce, same msg_id
    await wait_until(lambda: zim_stack.metric("channeld_messages_duplicate_total") >= 2)
    await zim_stack.idle()
    assert len(await zim_stack.answered(sent.chat_id, bool)) == 1
    assert len(fake_llm_slow.requests) == 1


async def test_zims_retry_schedule_is_answered_once(tmp_path: Path, fake_llm: FakeLLM) -> None:
    # the first attempt finds no channel (404); ZIM retries the same body 2 s later (x 0.25)
    async with (
        ZimEmulatorThread(callback="", retry_scale=0.25, callback_timeout=2.0) as emulator,
        running(tmp_path, emulator, fake_llm) as stack,
    ):
        await stack.connected()
        await emulator.set_callback(f"{stack.hooks}/nobody")
        sent = await stack.say("are you there?")
        assert not sent.delivered
        await emulator.set_callback(f"{stack.hooks}/{CHANNEL}")
        await stack.answered(sent.chat_id, says("Echo: are you there?"))
        attempts = await emulator.callback_attempts(sent.message_id)
        assert [(a.attempt, a.status) for a in attempts] == [(0, 404), (1, 200)]
        assert attempts[0].body == attempts[1].body  # the same nonce and signature
        await stack.say("", message_id=sent.message_id)
        await wait_until(lambda: stack.metric("channeld_messages_duplicate_total") >= 1)
        await stack.idle()
        assert len(fake_llm.requests) == 1


def signed_body(secret: str, timestamp: int, msg_id: str = "42") -> dict[str, Any]:
    return {
        "appid": APP_ID,
        "event": "bot_msg",
        "nonce": "4711",
        "timestamp": timestamp,
        "signature": callback_signature(secret, timestamp, "4711"),
        "from_user_id": "user_9",
        "conv_type": 0,
        "conv_id": ROBOT,
        "msg_type": 1,
        "msg_body": "should not be answered",
        "msg_id": msg_id,
        "msg_time": int(time.time() * 1000),
    }


async def test_bad_signature_and_stale_timestamp_are_refused_and_nothing_is_answered(
    zim_stack: ZimStack, fake_llm_slow: FakeLLM
) -> None:
    now = int(time.time())
    assert await zim_stack.post(signed_body("not-the-secret", now)) == 401
    assert await zim_stack.post(signed_body(SECRET, now - 700)) == 401
    assert await zim_stack.post(signed_body(SECRET, now + 700)) == 401
    assert zim_stack.metric("channeld_callbacks_total", outcome="rejected", reason="signature") == 1
    assert zim_stack.metric("channeld_callbacks_total", outcome="rejected", reason="timestamp") == 2
    await zim_stack.idle()
    assert fake_llm_slow.requests == []
    assert [c for c in await zim_stack.emulator.calls() if c.action != "RobotRegister"] == []


async def test_a_long_answer_is_split_within_2000_bytes(
    zim_stack: ZimStack, fake_llm_slow: FakeLLM
) -> None:
    sentence = "流式编辑的消息不能超过两千字节，emoji 🚀 也一样。"
    paragraphs = [" ".join([f"第{n}段"] + [sentence] * 20) for n in range(8)]
    answer = "\n\n".join(paragraphs)
    assert len(answer.encode()) > 3 * 2000
    fake_llm_slow.script_reply(answer, token_interval=0.001)
    sent = await zim_stack.say("a long one, please")
    items = await zim_stack.answered(sent.chat_id, lambda i: len(i) >= 4)
    await zim_stack.idle()
    items = await zim_stack.answered(sent.chat_id, bool)
    texts = [i["text"] for i in items]
    assert all(len(t.encode()) <= 2000 for t in texts)
    assert texts[1].startswith(CONTINUED)
    joined = texts[0] + "".join(t.removeprefix(f"{CONTINUED}\n\n") for t in texts[1:])
    assert "".join(joined.split()) == "".join(answer.split())
    assert all("\ufffd" not in t for t in texts)


async def test_ten_concurrent_answers_stay_within_the_apps_rate(
    zim_stack: ZimStack, fake_llm_slow: FakeLLM
) -> None:
    words = " ".join(f"word{n}" for n in range(40))
    for _ in range(10):
        fake_llm_slow.script_reply(words, token_interval=0.02)
    sent = await asyncio.gather(*(zim_stack.say(f"q{n}", user=f"user_{n}") for n in range(10)))
    for message in sent:
        await zim_stack.answered(message.chat_id, says(words), timeout=30)
    await zim_stack.idle()
    assert await zim_stack.emulator.refusals() == []
    edits = [c for c in await zim_stack.emulator.calls() if c.action == "EditC2cMsgBody"]
    assert len(edits) >= 10  # they did stream
    assert all(c.code == 0 for c in await zim_stack.emulator.calls())


async def test_context_is_kept_and_new_starts_afresh(
    zim_stack: ZimStack, fake_llm_slow: FakeLLM
) -> None:
    await context_then_new(zim_stack, fake_llm_slow)


async def test_a_wrong_secret_fails_the_channel_with_a_clear_error(tmp_path: Path) -> None:
    async with (
        ZimEmulatorThread(callback="", **FAST) as emulator,
        running(tmp_path, emulator, None, server_secret="f" * 32) as stack,
    ):
        error = await stack.failed()
        assert "100000005" in error and "server_secret" in error, error
        assert "f" * 32 not in error and SECRET not in error
