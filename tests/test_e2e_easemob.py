"""Easemob end to end: the emulator's signed pre-send and post-send callbacks, the daemon's callback
listener and Easemob channel, the fake LLM, and the bot's messages as an Easemob client shows
them, rewrites included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar

import pytest

from channels.easemob.emulator import EasemobEmulatorThread
from tests.agents_support import fake_llm_fixture
from tests.e2e_support import fake_llm_slow, wait_until
from tests.easemob_support import (
    APP,
    BOT,
    CALLBACK_SECRET,
    CLIENT_ID,
    CLIENT_SECRET,
    ORG,
    started,
)
from tests.webhook_e2e_support import (
    WebhookStack,
    context_then_new,
    says,
    user_turns,
    webhook_stack,
)
from tools.fake_llm import FakeLLM

__all__ = ["fake_llm_fixture", "fake_llm_slow"]

CHANNEL = "em-main"


class EasemobStack(WebhookStack):
    """A daemon with one Easemob channel on the emulator, whose callbacks go to the daemon."""

    channel_id = CHANNEL
    platform = "easemob"
    credentials: ClassVar[dict[str, Any]] = {
        "org_name": ORG,
        "app_name": APP,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "callback_secret": CALLBACK_SECRET,
        "bot_user": BOT,
    }
    bot, user_field, user = BOT, "from_user", "u1"

    def is_bot(self, item: dict[str, Any]) -> bool:
        return bool(item["sender"] == BOT)


def running(
    tmp_path: Path, emulator: EasemobEmulatorThread, llm: FakeLLM | None, **channel: Any
) -> AbstractAsyncContextManager[EasemobStack]:
    return webhook_stack(EasemobStack, tmp_path, emulator, llm, **channel)


@pytest.fixture
async def em_emulator() -> AsyncIterator[EasemobEmulatorThread]:
    async with started(None) as emulator:
        yield emulator


@pytest.fixture
async def em_stack(
    tmp_path: Path, em_emulator: EasemobEmulatorThread, fake_llm_slow: FakeLLM
) -> AsyncIterator[EasemobStack]:
    async with running(tmp_path, em_emulator, fake_llm_slow) as stack:
        await stack.connected()
        yield stack


async def test_a_direct_message_is_let_through_at_once_and_answered(
    em_stack: EasemobStack, fake_llm_slow: FakeLLM
) -> None:
    sent = await em_stack.say("hello there")
    assert sent.delivered and sent.verdict == "pass" and sent.presend_in_time
    await em_stack.answered(sent.chat_id, says("Echo: hello there"))
    (presend,) = await em_stack.emulator.presends(sent.msg_id)
    assert (presend.status, presend.answer, presend.by_default) == (200, {"valid": True}, False)
    assert len(fake_llm_slow.requests) == 1


async def test_the_pre_send_verdict_comes_within_the_wait_while_the_llm_is_slow(
    em_stack: EasemobStack, fake_llm_slow: FakeLLM
) -> None:
    fake_llm_slow.script_stall(1.0)  # the answer takes over a second to begin
    sent = await em_stack.say("take your time")
    assert sent.presend_in_time and sent.presend_after is not None
    assert sent.presend_after < 0.2  # the console's default wait time
    assert await em_stack.bot_items(sent.chat_id) == []  # answered before the LLM said a word
    await em_stack.answered(sent.chat_id, says("Echo: take your time"))


async def test_a_message_by_both_callbacks_and_redelivered_is_answered_once(
    em_stack: EasemobStack, fake_llm_slow: FakeLLM
) -> None:
    sent = await em_stack.say("only once please")  # pre-send, then post-send
    await em_stack.answered(sent.chat_id, says("Echo: only once please"))
    await em_stack.emulator.send_user_message(BOT, message_id=sent.msg_id)  # both again
    await wait_until(lambda: em_stack.metric("channeld_messages_duplicate_total") >= 3)
    await em_stack.idle()
    assert len(await em_stack.bot_items(sent.chat_id)) == 1
    assert user_turns(fake_llm_slow) == ["only once please"]


async def test_the_bots_own_echo_causes_no_llm_call(
    em_stack: EasemobStack, fake_llm_slow: FakeLLM
) -> None:
    sent = await em_stack.say("hello")
    (answer,) = await em_stack.answered(sent.chat_id, says("Echo: hello"))
    # the post-send callback reports the bot's REST send too
    await wait_until(lambda: em_stack.metric("channeld_messages_ignored_total") >= 1)
    echoes = await em_stack.emulator.postsends(answer["id"])
    assert echoes and all(e.ok for e in echoes)
    await em_stack.idle()
    assert len(fake_llm_slow.requests) == 1


@pytest.mark.parametrize(
    ("signing", "reason"),
    [({"secret": "not-the-secret"}, "signature"), ({"skew_seconds": -700.0}, "timestamp")],
    ids=["security", "stale"],
)
async def test_a_bad_security_or_a_stale_timestamp_is_refused_and_nothing_answered(
    em_stack: EasemobStack, fake_llm_slow: FakeLLM, signing: dict[str, Any], reason: str
) -> None:
    sent = await em_stack.say("let me in", **signing)
    (presend,) = await em_stack.emulator.presends(sent.msg_id)
    assert presend.status == 401
    posts = [p for p in await em_stack.emulator.postsends(sent.msg_id) if p.event == "chat"]
    assert posts and all(p.status == 401 for p in posts)
    metric = em_stack.metric("channeld_callbacks_total", outcome="rejected", reason=reason)
    assert metric == 1 + len(posts)
    await em_stack.idle()
    assert await em_stack.bot_items(sent.chat_id) == []
    assert fake_llm_slow.requests == []


async def test_a_long_multibyte_answer_is_split_within_5000_bytes(
    em_stack: EasemobStack,
) -> None:
    question = "\n\n".join(f"第{n}段：" + "长文本" * 600 for n in range(3))  # 3 x 5,400 bytes
    sent = await em_stack.say(question)
    items = await em_stack.answered(sent.chat_id, lambda i: len(i) >= 4)
    await em_stack.idle()
    texts = [i["text"] for i in await em_stack.bot_items(sent.chat_id)]
    assert all(len(t.encode()) <= 5000 for t in texts)
    assert "".join("".join(texts).split()) == "".join(f"Echo: {question}".split())
    assert len(items) >= 4


async def test_edit_streaming_rewrites_one_message_within_the_cap(
    tmp_path: Path, fake_llm_slow: FakeLLM
) -> None:
    fake_llm_slow.script_reply(" ".join(f"word{n}" for n in range(120)))  # about 4 s of tokens
    async with (
        started(None, rewrite=True) as emulator,
        running(tmp_path, emulator, fake_llm_slow, stream="edit") as stack,
    ):
        await stack.connected()
        sent = await stack.say("tell me a story")
        expected = " ".join(f"word{n}" for n in range(120))
        (answer,) = await stack.answered(sent.chat_id, says(expected))
        card = await emulator.card(answer["id"])
        assert 2 <= card.edits <= 9  # rewritten as it grew, within the cap
        assert len(card.texts) == card.edits + 1 and card.texts[0] != expected


async def test_context_is_kept_and_new_starts_afresh(
    em_stack: EasemobStack, fake_llm_slow: FakeLLM
) -> None:
    await context_then_new(em_stack, fake_llm_slow)


async def test_a_token_expired_mid_run_is_refreshed_once(
    em_stack: EasemobStack,
) -> None:
    sent = await em_stack.say("first")
    await em_stack.answered(sent.chat_id, says("Echo: first"))
    await em_stack.idle()
    assert await em_stack.emulator.expire_tokens() == 1
    await em_stack.say("second")
    await em_stack.answered(sent.chat_id, says("Echo: first", "Echo: second"))
    granted = [t for t in await em_stack.emulator.token_requests() if t.granted]
    assert len(granted) == 2  # the start's, and one refresh


async def test_a_wrong_secret_fails_the_channel_with_a_clear_error(tmp_path: Path) -> None:
    async with (
        started(None) as emulator,
        running(tmp_path, emulator, None, client_secret="YXA6wrong") as stack,
    ):
        error = await stack.failed()
        assert "invalid client_secret" in error, error
        assert "YXA6wrong" not in error and CLIENT_SECRET not in error
