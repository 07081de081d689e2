"""WuKongIM answers through `WuKongIMProvider` against the emulator: the event stream (anchor,
deltas, close, finish), the plain-message fallbacks, long answers, retried events and crash
recovery (docs/platforms/wukongim.md §4, §5.2)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from channels.model import ChannelId, ChannelState, InboundMessage
from channels.provider import ReplyStream
from channels.recovery import INTERRUPTED_NOTE
from channels.tail import CARD_INCOMPLETE, CONTINUED
from channels.wukongim.config import WuKongIMChannelConfig
from channels.wukongim.convert import to_inbound
from channels.wukongim.emulator import WuKongIMEmulatorThread
from channels.wukongim.emulator.state import fake_channel_id
from channels.wukongim.provider import WuKongIMProvider
from channels.wukongim.reply import ANCHOR_TEXT
from common.errors import AuthError, TransientError
from tests.test_wukongim_convert import group_item, item
from tests.wukongim_support import BOT, started

TOKEN = "manager-token-77c1"
DM_CHAT = fake_channel_id(BOT, "u1")  # where the emulator files the bot's DM with u1


async def no_sink(_message: InboundMessage) -> None:
    raise AssertionError("nothing arrives in these tests")


def dm() -> InboundMessage:
    message = to_inbound(ChannelId("wk-main"), item("question", message_idstr="101"), BOT)
    assert message is not None
    return message


def in_group() -> InboundMessage:
    message = to_inbound(
        ChannelId("wk-main"),
        group_item("@aibot question", {"uids": [BOT]}, message_idstr="102"),
        BOT,
    )
    assert message is not None
    return message


@pytest.fixture
async def emulator() -> AsyncIterator[WuKongIMEmulatorThread]:
    async with started(None, token=TOKEN) as emulator:
        yield emulator


def settings(emulator: WuKongIMEmulatorThread, **fields: Any) -> WuKongIMChannelConfig:
    return WuKongIMChannelConfig(
        id="wk-main", api_base=emulator.url, bot_uid=BOT, token=SecretStr(TOKEN), **fields
    )


@pytest.fixture
async def provider(emulator: WuKongIMEmulatorThread) -> AsyncIterator[WuKongIMProvider]:
    provider = WuKongIMProvider(settings(emulator), no_sink)
    await provider.start()
    yield provider
    await provider.close()


async def events(emulator: WuKongIMEmulatorThread, number: str) -> list[tuple[str, str]]:
    return [(r.event_id, r.event_type) for r in await emulator.events(number)]


async def bot_items(emulator: WuKongIMEmulatorThread, chat: str = DM_CHAT) -> list[dict[str, Any]]:
    view = await emulator.chat_view(chat)
    return [i for i in (view or {}).get("items", []) if i["sender"] == BOT]


def decoded_text(payload: str) -> Any:
    return json.loads(base64.b64decode(payload))["content"]


def number_of(stream: ReplyStream) -> str:
    number = stream.delivered.card_id
    assert number is not None
    return number


async def test_an_answer_streams_into_one_message(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    assert provider.state is ChannelState.CONNECTED
    stream = await provider.open_stream(dm())
    number = number_of(stream)
    await stream.update("Hello")
    await stream.update("Hello, wor")
    await stream.finish("Hello, world.")
    assert await events(emulator, number) == [
        (f"{number}:0-5", "stream.delta"),
        (f"{number}:5-10", "stream.delta"),
        (f"{number}:10-13", "stream.delta"),
        (f"{number}:close", "stream.close"),
        (f"{number}:finish", "stream.finish"),
    ]
    assert all(r.anchored for r in await emulator.events(number))
    (answer,) = await bot_items(emulator)
    assert (answer["kind"], answer["client_msg_no"]) == ("card", number)
    assert (answer["text"], answer["status"]) == ("Hello, world.", "finished")
    (anchor,) = await emulator.calls("/message/send")
    assert (anchor.body["is_stream"], anchor.body["channel_id"], anchor.body["channel_type"]) == (
        1,
        "u1",
        1,
    )
    assert stream.delivered.text == "Hello, world."


async def test_a_group_answer_streams_into_the_group(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    stream = await provider.open_stream(in_group())
    await stream.finish("Everyone, hello.")
    (anchor,) = await emulator.calls("/message/send")
    assert (anchor.body["channel_id"], anchor.body["channel_type"]) == ("g1", 2)
    (answer,) = await bot_items(emulator, "g1")
    assert (answer["text"], answer["status"]) == ("Everyone, hello.", "finished")


async def test_every_answer_gets_its_own_stream_even_to_the_same_question(
    provider: WuKongIMProvider,
) -> None:
    first = await provider.open_stream(dm())
    second = await provider.open_stream(dm())
    assert number_of(first) != number_of(second)
    await first.finish("one")
    await second.finish("two")


async def test_with_streams_off_the_answer_is_a_plain_message(
    emulator: WuKongIMEmulatorThread,
) -> None:
    provider = WuKongIMProvider(settings(emulator, stream="off"), no_sink)
    await provider.start()
    try:
        stream = await provider.open_stream(dm())
        await stream.update("partial")
        await stream.finish("The whole answer.")
    finally:
        await provider.close()
    assert stream.delivered.card_id is None
    assert [(i["kind"], i["text"]) for i in await bot_items(emulator)] == [
        ("message", "The whole answer.")
    ]
    assert await emulator.events() == []


@pytest.mark.parametrize(
    ("version", "streams"),
    [("v2.2.3-20260128", False), ("v2.1.5-20250424", False), ("v2.2.4-20260313", True), ("", True)],
)
async def test_the_servers_version_decides_whether_answers_stream(
    version: str, streams: bool
) -> None:
    async with started(None, version=version) as emulator:
        provider = WuKongIMProvider(
            WuKongIMChannelConfig(id="wk-main", api_base=emulator.url, bot_uid=BOT), no_sink
        )
        await provider.start()
        try:
            stream = await provider.open_stream(dm())
            await stream.finish("Answer.")
        finally:
            await provider.close()
        kinds = [(i["kind"], i["text"]) for i in await bot_items(emulator)]
    assert kinds == ([("card", "Answer.")] if streams else [("message", "Answer.")])


async def test_an_event_api_that_refuses_the_first_event_gets_one_plain_answer(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    await emulator.add_fault("/message/event", 404, times=None)
    stream = await provider.open_stream(dm())
    await stream.update("Hel")
    await stream.update("Hello there")
    await stream.finish("Hello there. All of it.")
    items = await bot_items(emulator)
    # the anchor never showed any of the answer; the answer came once, whole
    assert [(i["kind"], i["text"]) for i in items] == [
        ("card", ""),
        ("message", "Hello there. All of it."),
    ]
    assert await emulator.events() == []
    (refused,) = await emulator.calls("/message/event")  # nothing after the first refusal
    assert refused.status == 404
    assert stream.delivered.text == "Hello there. All of it."


async def test_a_stream_refused_midway_keeps_what_it_showed_and_is_closed(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    stream = await provider.open_stream(dm())
    number = number_of(stream)
    await stream.update("First part.")
    await emulator.add_fault("/message/event", 400, msg="stream closed")
    await stream.update("First part. Second")
    await stream.finish("First part. Second part.")
    card, rest = await bot_items(emulator)
    assert (card["text"], card["status"]) == ("First part.", "finished")
    assert (rest["kind"], rest["text"]) == ("message", f"{CONTINUED}\n\nSecond part.")
    assert [t for _, t in await events(emulator, number)] == [
        "stream.delta",
        "stream.close",
        "stream.finish",
    ]


async def test_an_answer_that_no_longer_continues_the_stream_follows_whole(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    stream = await provider.open_stream(dm())
    await stream.update("Draft")
    await stream.finish("Something else entirely.")
    card, rest = await bot_items(emulator)
    assert (card["text"], card["status"]) == ("Draft", "finished")
    assert rest["text"] == f"{CARD_INCOMPLETE}\n\nSomething else entirely."


async def test_a_delta_that_failed_is_sent_again_under_its_own_id_before_anything_new(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    stream = await provider.open_stream(dm())
    number = number_of(stream)
    await emulator.add_fault("/message/event", 503, msg="busy")
    with pytest.raises(TransientError):
        await stream.update("Hello")
    await stream.update("Hello, world")
    await stream.finish("Hello, world")
    assert await events(emulator, number) == [
        (f"{number}:0-5", "stream.delta"),
        (f"{number}:5-12", "stream.delta"),
        (f"{number}:close", "stream.close"),
        (f"{number}:finish", "stream.finish"),
    ]
    (card,) = await bot_items(emulator)
    assert card["text"] == "Hello, world"


async def test_a_final_call_retried_after_a_lost_answer_sends_the_same_events(
    emulator: WuKongIMEmulatorThread,
) -> None:
    provider = WuKongIMProvider(settings(emulator, request_timeout=0.3), no_sink)
    await provider.start()
    try:
        stream = await provider.open_stream(dm())
        number = number_of(stream)
        await stream.update("Hello")
        # the finish lands, its answer does not arrive in time: the emitter calls finish again
        await emulator.add_fault("/message/event", None, delay=1.0)
        with pytest.raises(TransientError):
            await stream.finish("Hello.")
        await stream.finish("Hello.")
        await emulator.wait_for(lambda e: len(e.events(number)) >= 5)
    finally:
        await provider.close()
    records = await emulator.events(number)
    ids = [r.event_id for r in records]
    assert sorted(ids) == sorted(
        [f"{number}:0-5", f"{number}:5-6", f"{number}:5-6", f"{number}:close", f"{number}:finish"]
    )
    assert [r.event_id for r in records if r.repeated] == [f"{number}:5-6"]


async def test_a_long_answer_streams_up_to_the_limit_and_continues_in_messages(
    emulator: WuKongIMEmulatorThread,
) -> None:
    provider = WuKongIMProvider(settings(emulator, max_message_chars=200), no_sink)
    await provider.start()
    paragraphs = [f"Paragraph {n}: " + "word " * 30 for n in range(4)]
    answer = "\n\n".join(p.strip() for p in paragraphs)
    try:
        stream = await provider.open_stream(dm())
        for end in range(50, len(answer), 50):
            await stream.update(answer[:end])
        await stream.finish(answer)
    finally:
        await provider.close()
    card, *messages = await bot_items(emulator)
    assert card["status"] == "finished"
    assert len(card["text"]) <= 200 and answer.startswith(card["text"])
    assert messages and all(len(m["text"]) <= 200 for m in messages)
    assert messages[0]["text"].startswith(CONTINUED)
    shown = card["text"] + "".join(m["text"] for m in messages)
    assert "".join(answer.split()) == "".join(shown.replace(CONTINUED, "").split())


async def test_plain_messages_carry_a_number_that_makes_a_retry_the_same_message(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    await provider.send(dm(), "Once.")
    await provider.send(dm(), "Once.")  # a retry of the same send
    await provider.send(dm(), "Another answer.")
    numbers = [c.body["client_msg_no"] for c in await emulator.calls("/message/send")]
    assert numbers[0] == numbers[1] != numbers[2]


async def test_recovery_closes_a_stream_left_open_once(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    stream = await provider.open_stream(dm())
    number = number_of(stream)
    await stream.update("Half an ans")
    # the process died here; the next one resumes from the journal's card id and text
    for _attempt in range(2):
        later = WuKongIMProvider(settings(emulator), no_sink)
        await later.start()
        try:
            resumed = await later.resume_stream(dm(), number, "Half an ans")
            await resumed.fail(INTERRUPTED_NOTE, partial_text="Half an ans")
        finally:
            await later.close()
    assert [t for _, t in await events(emulator, number)] == [
        "stream.delta",
        "stream.delta",
        "stream.close",
        "stream.finish",
    ]
    (card,) = await bot_items(emulator)
    assert (card["text"], card["status"]) == (f"Half an ans\n\n{INTERRUPTED_NOTE}", "finished")
    # a crash would have taken this reply with it; here it must let go of its HTTP client
    await provider.close()
    await stream.fail("gone")


async def test_recovery_leaves_a_stream_that_was_ended_already_alone(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    stream = await provider.open_stream(dm())
    number = number_of(stream)
    await stream.update("The answ")
    await stream.finish("The answer.")
    # the process died before it recorded the outcome: recovery ends it with the stored answer
    resumed = await provider.resume_stream(dm(), number, "The answ")
    await resumed.finish("The answer.")
    assert len(await emulator.events(number)) == 4  # two deltas, close, finish: nothing more
    (card,) = await bot_items(emulator)
    assert card["text"] == "The answer."
    assert resumed.delivered.text == "The answer."


async def test_the_anchor_is_sent_once_more_under_the_same_number_after_a_transient_failure(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    await emulator.add_fault("/message/send", 502)
    stream = await provider.open_stream(dm())
    await stream.finish("Fine.")
    sends = await emulator.calls("/message/send")
    assert [c.status for c in sends] == [502, 200]
    assert sends[0].body["client_msg_no"] == sends[1].body["client_msg_no"] == number_of(stream)
    assert [i["text"] for i in await bot_items(emulator)] == ["Fine."]


async def test_an_anchor_that_cannot_be_sent_leaves_the_answer_to_messages(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    await emulator.add_fault("/message/send", 503, times=2)
    stream = await provider.open_stream(dm())
    await stream.finish("Still answered.")
    assert stream.delivered.card_id is None
    assert [(i["kind"], i["text"]) for i in await bot_items(emulator)] == [
        ("message", "Still answered.")
    ]


async def test_the_anchor_says_little_to_clients_that_do_not_stream(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    stream = await provider.open_stream(dm())
    (anchor,) = await emulator.calls("/message/send")
    assert anchor.body["is_stream"] == 1
    assert decoded_text(anchor.body["payload"]) == ANCHOR_TEXT == "…"
    await stream.finish("Done.")


@pytest.mark.parametrize(("token", "error"), [("wrong-token", AuthError), (TOKEN, TransientError)])
async def test_the_channel_start_checks_the_token_and_the_server(
    emulator: WuKongIMEmulatorThread, token: str, error: type[Exception]
) -> None:
    url = emulator.url
    if error is TransientError:
        await emulator.add_fault("/varz", 503, msg="restarting")
    provider = WuKongIMProvider(
        WuKongIMChannelConfig(id="wk-main", api_base=url, bot_uid=BOT, token=SecretStr(token)),
        no_sink,
    )
    try:
        with pytest.raises(error) as caught:
            await provider.start()
    finally:
        await provider.close()
    assert provider.state is ChannelState.DISCONNECTED
    assert "wrong-token" not in str(caught.value) and TOKEN not in str(caught.value)


async def test_a_failed_answer_whose_note_cannot_stream_still_closes_the_stream(
    emulator: WuKongIMEmulatorThread, provider: WuKongIMProvider
) -> None:
    stream = await provider.open_stream(dm())
    await stream.update("Partial")
    await emulator.add_fault("/message/event", 503, msg="busy")
    await stream.fail("(The answer failed.)", partial_text="Partial")
    card, note = await bot_items(emulator)
    assert (card["text"], card["status"]) == ("Partial", "finished")
    assert note["text"] == f"{CONTINUED}\n\n(The answer failed.)"
