"""Easemob answers against the emulator: messages from the bot user, long answers split within
5,000 bytes of UTF-8, one message rewritten at most 9 times as the answer grows, and a refused
rewrite leaving the whole answer delivered once (docs/platforms/easemob.md §3.3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from channels.easemob.api import EasemobApi
from channels.easemob.config import EasemobChannelConfig
from channels.easemob.convert import to_inbound
from channels.easemob.emulator import EasemobEmulatorThread
from channels.easemob.provider import EasemobProvider
from channels.easemob.reply import MAX_REWRITES, EasemobMessageSender, EasemobReplyStream
from channels.model import ChannelId, ChannelState, InboundMessage
from channels.recovery import INTERRUPTED_NOTE
from channels.tail import CONTINUED
from common.errors import AuthError
from tests.easemob_support import APP, BOT, CALLBACK_SECRET, CLIENT_ID, CLIENT_SECRET, ORG, started
from tests.test_easemob_convert import pre_send

CHAT = f"{BOT}|u1"  # the emulator's id of the bot's chat with u1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def no_sink(_message: InboundMessage) -> None:
    raise AssertionError("nothing arrives in these tests")


def question(msg_id: str = "901") -> InboundMessage:
    message = to_inbound(ChannelId("em-main"), pre_send("question", msg_id=msg_id), BOT)
    assert message is not None
    return message


def settings(emulator: EasemobEmulatorThread, **fields: Any) -> EasemobChannelConfig:
    base: dict[str, Any] = {
        "id": "em-main",
        "api_base": emulator.url,
        "org_name": ORG,
        "app_name": APP,
        "client_id": CLIENT_ID,
        "client_secret": SecretStr(CLIENT_SECRET),
        "callback_secret": SecretStr(CALLBACK_SECRET),
        "bot_user": BOT,
    }
    return EasemobChannelConfig(**{**base, **fields})


@pytest.fixture
async def emulator() -> AsyncIterator[EasemobEmulatorThread]:
    async with started(None, rewrite=True) as emulator:
        yield emulator


@pytest.fixture
async def api(emulator: EasemobEmulatorThread) -> AsyncIterator[EasemobApi]:
    api = EasemobApi(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        api_base=emulator.url,
        org_name=ORG,
        app_name=APP,
        bot_user=BOT,
    )
    yield api
    await api.close()


def edited_stream(api: EasemobApi, clock: Clock, limit: int = 5000) -> EasemobReplyStream:
    sender = EasemobMessageSender(api, limit)
    return EasemobReplyStream(api, sender, question(), streaming=True, clock=clock)


async def bot_items(emulator: EasemobEmulatorThread) -> list[dict[str, Any]]:
    view = await emulator.chat_view(CHAT)
    return [i for i in (view or {}).get("items", []) if i["sender"] == BOT]


async def rewrites(emulator: EasemobEmulatorThread) -> int:
    return len([c for c in await emulator.calls() if c.method == "PUT" and c.status == 200])


async def test_the_start_creates_the_bot_user_and_a_restart_finds_it(
    emulator: EasemobEmulatorThread,
) -> None:
    for _ in range(2):
        provider = EasemobProvider(settings(emulator), no_sink)
        await provider.start()
        assert provider.state is ChannelState.CONNECTED
        await provider.close()
    assert await emulator.users() == [BOT]
    assert len(await emulator.token_requests()) == 2  # one a start


async def test_a_wrong_secret_fails_the_start_with_the_platforms_words(
    emulator: EasemobEmulatorThread,
) -> None:
    provider = EasemobProvider(settings(emulator, client_secret=SecretStr("YXA6wrong")), no_sink)
    try:
        with pytest.raises(AuthError, match="invalid client_secret"):
            await provider.start()
    finally:
        await provider.close()


async def test_with_stream_off_the_answer_is_one_message_at_the_end(
    emulator: EasemobEmulatorThread,
) -> None:
    provider = EasemobProvider(settings(emulator), no_sink)
    await provider.start()
    try:
        stream = await provider.open_stream(question())
        await stream.update("Hel")
        await stream.update("Hello, wor")
        assert await bot_items(emulator) == []
        await stream.finish("Hello, world.")
    finally:
        await provider.close()
    (answer,) = await bot_items(emulator)
    assert answer["text"] == "Hello, world."
    assert await rewrites(emulator) == 0


async def test_a_long_multibyte_answer_is_split_within_5000_bytes(
    emulator: EasemobEmulatorThread,
) -> None:
    paragraphs = ["段落" * 700 + f" {n}。" for n in range(4)]  # about 4,200 bytes each
    answer = "\n\n".join(paragraphs) + "\n\n```\n" + "代码 = 1\n" * 300 + "```"
    provider = EasemobProvider(settings(emulator), no_sink)
    await provider.start()
    try:
        stream = await provider.open_stream(question())
        await stream.finish(answer)
    finally:
        await provider.close()
    texts = [i["text"] for i in await bot_items(emulator)]
    assert len(texts) >= 5
    assert all(len(t.encode()) <= 5000 for t in texts)
    assert texts[:4] == paragraphs  # cut between paragraphs, not inside them
    code = "".join(t.replace("```\n", "").replace("```", "") for t in texts[4:])
    assert "".join(code.split()) == "".join(("代码 = 1\n" * 300).split())
    assert all(c.status == 200 for c in await emulator.calls())  # no 14007 "too large"


async def test_edit_streaming_stays_within_nine_rewrites_spread_over_the_answer(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    clock = Clock()
    stream = edited_stream(api, clock)
    await stream.begin()
    text = ""
    for n in range(120):  # a two-minute answer, one update a second
        text += f"word{n} "
        await stream.update(text)
        clock.now += 1.0
    await stream.finish(text + "end.")
    (answer,) = await bot_items(emulator)
    assert answer["text"] == text + "end."
    card = await emulator.card(answer["id"])
    assert card.edits == await rewrites(emulator) <= MAX_REWRITES
    assert await rewrites(emulator) >= 5  # rewritten as it grew, not only at the end
    # spread with growing gaps: the intermediate rewrites did not spend the cap in seconds
    assert "word30 " in card.texts[-2]


async def test_a_short_answer_is_posted_once_and_rewritten_once_at_the_end(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    clock = Clock()
    stream = edited_stream(api, clock)
    await stream.begin()
    await stream.update("Hel")
    await stream.update("Hello")  # within the spacing: no rewrite
    await stream.finish("Hello, world.")
    (answer,) = await bot_items(emulator)
    card = await emulator.card(answer["id"])
    assert card.texts == ["Hel", "Hello, world."]


async def test_a_refused_rewrite_stops_rewriting_and_the_whole_answer_arrives_once(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    await emulator.set_rewrite(False)
    clock = Clock()
    stream = edited_stream(api, clock)
    await stream.begin()
    await stream.update("First part.")
    clock.now += 5
    await stream.update("First part. Second")  # refused: no more rewrites
    clock.now += 5
    await stream.update("First part. Second part. Third")
    await stream.finish("First part. Second part. Third part.")
    texts = [i["text"] for i in await bot_items(emulator)]
    assert texts == ["First part.", f"{CONTINUED}\n\nSecond part. Third part."]
    refused = [c for c in await emulator.calls() if c.method == "PUT"]
    assert [c.status for c in refused] == [403]  # stopped at the first refusal


async def test_an_answer_longer_than_one_message_fills_the_rewritten_one_then_continues(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    clock = Clock()
    stream = edited_stream(api, clock, limit=200)
    await stream.begin()
    answer = " ".join(f"w{n:03d}" for n in range(100))  # 499 bytes
    await stream.update(answer[:50])
    clock.now += 5
    await stream.update(answer[:300])
    await stream.finish(answer)
    texts = [i["text"] for i in await bot_items(emulator)]
    assert all(len(t.encode()) <= 200 for t in texts)
    assert texts[1].startswith(CONTINUED)
    joined = texts[0] + " " + " ".join(t.removeprefix(CONTINUED).strip() for t in texts[1:])
    assert joined.split() == answer.split()


async def test_a_recovered_answer_takes_its_message_over_with_one_final_rewrite(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    first = edited_stream(api, Clock())
    await first.begin()
    await first.update("Once upon a")
    msg_id = first.delivered.card_id
    assert msg_id is not None
    # a new process: recovery ends the message with what it showed and the note
    provider = EasemobProvider(settings(emulator, stream="edit"), no_sink)
    await provider.start()
    try:
        resumed = await provider.resume_stream(question(), msg_id, "Once upon a")
        await resumed.fail(INTERRUPTED_NOTE, "Once upon a")
    finally:
        await provider.close()
    (answer,) = await bot_items(emulator)
    assert answer["text"] == f"Once upon a\n\n{INTERRUPTED_NOTE}"
    assert (await emulator.card(msg_id)).edits == 1
