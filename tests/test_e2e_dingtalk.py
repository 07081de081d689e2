"""End to end: the daemon, the emulated DingTalk and the fake LLM, over real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from channels.dingtalk.emulator import EmulatorThread
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import dingtalk_emulator
from tests.e2e_support import fake_llm_slow, start_stack
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture", "fake_llm_slow"]

ANSWER = "The quick brown fox jumps over the lazy dog and keeps running far away"


def cards(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if i["kind"] == "card"]


def finished(card: dict[str, Any]) -> bool:
    """Streaming closed and the card's status set: the last two calls of a reply."""
    return bool(card["done"]) and card["flow_status"] in {"3", "5"}


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
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: bool(cards(i)) and finished(cards(i)[0])
        )
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


async def test_group_needs_a_mention_and_the_mention_is_stripped(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        ignored = await stack.say(
            "talking among ourselves",
            conversation_type="2",
            conversation_id="cid-group",
            mentioned=False,
            deliver_unmentioned=True,
        )
        await dingtalk_emulator.wait_for(lambda e: e.acks(ignored.frame_message_id))
        answered = await stack.say(
            "what time is it", conversation_type="2", conversation_id="cid-group", mentioned=True
        )
        items = await stack.wait_bot_items(
            "cid-group", lambda i: bool(cards(i)) and finished(cards(i)[0])
        )
        assert len(cards(items)) == 1
        assert len(fake_llm.requests) == 1
        user_turn = fake_llm.requests[0].messages[-1]["content"]
        assert user_turn == "what time is it"
        assert answered.frame_message_id != ignored.frame_message_id
    finally:
        await stack.stop()


async def test_conversation_continues_and_new_resets_the_context(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        first = await stack.say("my name is Ada")
        await stack.wait_bot_items(
            first.conversation_id, lambda i: len(cards(i)) == 1 and finished(cards(i)[0])
        )
        await stack.say("what is my name")
        await stack.wait_bot_items(
            first.conversation_id, lambda i: len(cards(i)) == 2 and finished(cards(i)[1])
        )
        second = fake_llm.requests[1].messages
        assert [m["content"] for m in second if m["role"] == "user"] == [
            "my name is Ada",
            "what is my name",
        ]
        assert any(m["role"] == "assistant" for m in second)

        await stack.say("/new")
        await stack.wait_bot_items(
            first.conversation_id,
            lambda i: any("new conversation" in m["text"] for m in messages(i)),
        )
        await stack.say("who am I")
        await stack.wait_bot_items(
            first.conversation_id, lambda i: len(cards(i)) == 3 and finished(cards(i)[2])
        )
        third = fake_llm.requests[2].messages
        assert [m["content"] for m in third if m["role"] != "system"] == ["who am I"]
    finally:
        await stack.stop()


async def test_help_lists_the_commands(tmp_path: Path, dingtalk_emulator: EmulatorThread) -> None:
    stack = await start_stack(tmp_path, dingtalk_emulator, None)
    try:
        await stack.connected()
        sent = await stack.say("/help")
        items = await stack.wait_bot_items(sent.conversation_id, lambda i: bool(messages(i)))
        assert "/new" in items[0]["text"] and "/stop" in items[0]["text"]
        assert cards(items) == []
    finally:
        await stack.stop()


async def test_redelivered_message_is_answered_once(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        sent = await stack.say("only once please")
        await stack.wait_bot_items(
            sent.conversation_id, lambda i: bool(cards(i)) and finished(cards(i)[0])
        )
        await dingtalk_emulator.call(lambda e: e.redeliver(sent.frame_message_id))
        await dingtalk_emulator.wait_for(lambda e: len(e.acks(sent.frame_message_id)) == 2)
        # the same msgId under a new frame id, as after a reconnect
        again = await stack.say("only once please", extra={"msgId": sent.msg_id})
        await dingtalk_emulator.wait_for(lambda e: e.acks(again.frame_message_id))
        assert stack.metric("channeld_messages_duplicate_total") == 2
        assert len(cards(await stack.bot_items(sent.conversation_id))) == 1
        assert len(fake_llm.requests) == 1
    finally:
        await stack.stop()


async def test_card_creation_refused_falls_back_to_one_markdown_reply(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    await dingtalk_emulator.add_fault(
        "/v1.0/card/instances/createAndDeliver",
        403,
        times=1,
        body={
            "code": "Forbidden.AccessDenied.AccessTokenPermissionDenied",
            "message": "missing Card.Instance.Write",
        },
    )
    fake_llm.script_reply(ANSWER)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        sent = await stack.say("hello")
        items = await stack.wait_bot_items(sent.conversation_id, lambda i: bool(messages(i)))
        await asyncio.sleep(0.3)  # a second, duplicate reply would arrive within this window
        items = await stack.bot_items(sent.conversation_id)
        assert cards(items) == []
        assert [m["text"] for m in messages(items)] == [ANSWER]
        assert messages(items)[0]["msgtype"] == "markdown"
    finally:
        await stack.stop()


async def test_llm_500_is_retried_and_llm_down_gives_a_clear_failure(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    fake_llm.script_error(500)
    fake_llm.script_reply(ANSWER)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm, agent={"max_retries": 1})
    try:
        await stack.connected()
        sent = await stack.say("first")
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: bool(cards(i)) and finished(cards(i)[0])
        )
        assert cards(items)[0]["text"] == ANSWER
        assert len(fake_llm.requests) == 2

        fake_llm.script_error(503)
        fake_llm.script_error(503)
        await stack.say("second")
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: len(cards(i)) == 2 and finished(cards(i)[1])
        )
        failed = cards(items)[1]
        assert failed["flow_status"] == "5"
        assert "could not answer" in failed["text"]
        assert len(fake_llm.requests) == 4
    finally:
        await stack.stop()


async def test_expired_session_webhook_uses_the_robot_api(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    stack = await start_stack(
        tmp_path, dingtalk_emulator, fake_llm, channel={"card_template_id": ""}
    )
    try:
        await stack.connected()
        direct = await stack.say("hello in private")
        await stack.wait_bot_items(direct.conversation_id, lambda i: bool(messages(i)))
        assert len(await dingtalk_emulator.calls("/robot/sendBySession")) == 1
        await stack.idle()

        # the session ends while the LLM is thinking: the answer goes through the robot API
        fake_llm.script_reply("late answer", first_token_delay=1.5)
        late = await stack.say("hello again")
        await dingtalk_emulator.wait_for(lambda e: e.acks(late.frame_message_id))
        await dingtalk_emulator.expire_sessions()
        items = await stack.wait_bot_items(direct.conversation_id, lambda i: len(messages(i)) == 2)
        assert items[1]["text"] == "late answer"
        robot = await dingtalk_emulator.calls("/v1.0/robot/oToMessages/batchSend")
        assert len(robot) == 1
        assert robot[0].body["userIds"] == ["user-1"]

        fake_llm.script_reply("group answer", first_token_delay=1.5)
        group = await stack.say(
            "hi group", conversation_type="2", conversation_id="cid-g", mentioned=True
        )
        await dingtalk_emulator.wait_for(lambda e: e.acks(group.frame_message_id))
        await dingtalk_emulator.expire_sessions()
        items = await stack.wait_bot_items(group.conversation_id, lambda i: bool(messages(i)))
        assert [i["text"] for i in items] == ["group answer"]
        assert len(await dingtalk_emulator.calls("/v1.0/robot/groupMessages/send")) == 1
    finally:
        await stack.stop()


async def test_ack_reaches_the_platform_before_the_llm_answers(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    fake_llm.script_reply(ANSWER, first_token_delay=1.0)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        sent = await stack.say("slow one")
        acks = await dingtalk_emulator.wait_for(lambda e: e.acks(sent.frame_message_id))
        assert acks is not None
        frames = await dingtalk_emulator.call(
            lambda e: [f for f in e.sent_frames() if f.message_id == sent.frame_message_id]
        )
        ack_latency = acks[0].at - frames[0].at
        assert ack_latency < 0.5
        assert acks[0].code == 200
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: bool(cards(i)) and finished(cards(i)[0])
        )
        card = await dingtalk_emulator.card(items[0]["id"])
        assert card is not None
        assert acks[0].at < card.history[-1].at - 0.5
    finally:
        await stack.stop()


async def test_a_message_during_an_answer_is_queued_and_the_user_is_told(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    fake_llm.script_reply("first answer", first_token_delay=0.6)
    fake_llm.script_reply("second answer")
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        sent = await stack.say("first question")
        await fake_llm.wait_for_requests(1)
        await stack.say("second question")
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: len(cards(i)) == 2 and finished(cards(i)[1])
        )
        notices = [m["text"] for m in messages(items)]
        assert len(notices) == 1 and "after the current reply" in notices[0]
        assert [c["text"] for c in cards(items)] == ["first answer", "second answer"]
        # in order: the second question was asked only after the first answer was complete
        second = fake_llm.requests[1].messages
        assert [m["content"] for m in second if m["role"] != "system"] == [
            "first question",
            "first answer",
            "second question",
        ]
    finally:
        await stack.stop()


async def test_long_answers_are_split_into_several_messages(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    paragraphs = [f"Paragraph {n}: " + "word " * 150 for n in range(12)]
    long_answer = "\n\n".join(p.strip() for p in paragraphs)
    fake_llm.script_reply(tokens=[p.strip() + "\n\n" for p in paragraphs])
    stack = await start_stack(
        tmp_path, dingtalk_emulator, fake_llm, channel={"card_template_id": ""}
    )
    try:
        await stack.connected()
        sent = await stack.say("tell me everything")
        items = await stack.wait_bot_items(sent.conversation_id, lambda i: len(messages(i)) >= 3)
        await asyncio.sleep(0.2)
        items = await stack.bot_items(sent.conversation_id)
        texts = [m["text"] for m in messages(items)]
        assert len(texts) >= 3
        assert all(len(t) <= 3500 for t in texts)
        assert " ".join(" ".join(texts).split()) == " ".join(long_answer.split())
        assert all(t.lstrip().startswith("Paragraph") for t in texts)  # cut on paragraph boundaries
    finally:
        await stack.stop()


async def test_card_updates_hitting_429_still_end_with_the_full_answer(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm_slow: FakeLLM
) -> None:
    await dingtalk_emulator.add_fault("/v1.0/card/streaming", 429, times=4, retry_after=0.1)
    fake_llm_slow.script_reply(ANSWER)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm_slow)
    try:
        await stack.connected()
        sent = await stack.say("hello")
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: bool(cards(i)) and finished(cards(i)[0])
        )
        assert cards(items)[0]["text"] == ANSWER
        assert cards(items)[0]["flow_status"] == "3"
        assert messages(items) == []
        statuses = [c.status for c in await dingtalk_emulator.calls("/v1.0/card/streaming")]
        assert statuses.count(429) == 4
    finally:
        await stack.stop()


async def test_streaming_permission_missing_sends_the_answer_as_a_message_once(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm_slow: FakeLLM
) -> None:
    await dingtalk_emulator.add_fault(
        "/v1.0/card/streaming",
        403,
        times=None,
        body={
            "code": "Forbidden.AccessDenied.AccessTokenPermissionDenied",
            "message": "Card.Streaming.Write",
        },
    )
    fake_llm_slow.script_reply(ANSWER)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm_slow)
    try:
        await stack.connected()
        sent = await stack.say("hello")
        items = await stack.wait_bot_items(sent.conversation_id, lambda i: bool(messages(i)))
        await asyncio.sleep(0.3)
        items = await stack.bot_items(sent.conversation_id)
        assert [m["text"] for m in messages(items)] == [ANSWER]
        card = cards(items)[0]
        assert card["flow_status"] == "3"  # not left on "thinking"
        assert ANSWER not in card["text"]
    finally:
        await stack.stop()


async def test_stop_cancels_the_answer_being_written(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    fake_llm.script_stall_mid_stream(after_tokens=2, seconds=30)
    fake_llm.script_reply("fresh answer")
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        sent = await stack.say("write me a novel")
        await stack.wait_bot_items(
            sent.conversation_id, lambda i: bool(cards(i)) and cards(i)[0]["text"]
        )
        await stack.say("/stop")
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: finished(cards(i)[0]) and bool(messages(i))
        )
        assert cards(items)[0]["flow_status"] == "5"
        assert "(stopped)" in cards(items)[0]["text"]
        assert [m["text"] for m in messages(items)] == ["Stopped."]
        await stack.say("next question")
        items = await stack.wait_bot_items(
            sent.conversation_id, lambda i: len(cards(i)) == 2 and finished(cards(i)[1])
        )
        assert cards(items)[1]["text"] == "fresh answer"
    finally:
        await stack.stop()


async def test_shutdown_lets_an_answer_in_progress_finish(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm_slow: FakeLLM
) -> None:
    fake_llm_slow.script_reply(ANSWER)
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm_slow)
    stack.daemon.settings = stack.daemon.settings.model_copy(
        update={"daemon": stack.daemon.settings.daemon.model_copy(update={"graceful_timeout": 10})}
    )
    await stack.connected()
    sent = await stack.say("answer before you go")
    await stack.wait_bot_items(
        sent.conversation_id, lambda i: bool(cards(i)) and cards(i)[0]["text"]
    )
    await stack.stop()  # SIGTERM path: intake stops, the answer completes
    items = await stack.bot_items(sent.conversation_id)
    assert cards(items)[0]["text"] == ANSWER
    assert cards(items)[0]["flow_status"] == "3"
