"""`channeld chat` against the emulator: streamed cards, plain messages, and its errors."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels.dingtalk.emulator import DingTalkEmulator, EmulatorThread
from daemon.chat import add_arguments as chat_arguments
from daemon.chat import chat
from daemon.chat import main as chat_main
from tests import dingtalk_support
from tests.dingtalk_support import DINGTALK_CLIENT_ID, DINGTALK_TEMPLATE, RawStreamClient, Screen

dingtalk_emulator = dingtalk_support.dingtalk_emulator  # the shared fixture, by name
ID = DINGTALK_CLIENT_ID


# --------------------------------------------------------------------------------


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


def _streaming_bot(url: str, screen: Screen | None) -> RawStreamClient:
    """A bot that answers every message with a streamed AI card, pausing once mid-way."""
    bot: RawStreamClient

    async def answer(frame: dict[str, Any]) -> None:
        data = json.loads(frame["data"])
        card_id = "card-" + data["msgId"][-8:-2]
        await bot.api.create_and_deliver_card(
            template_id=DINGTALK_TEMPLATE,
            out_track_id=card_id,
            card_data={"content": "", "flowStatus": "1"},
            conversation_type=data["conversationType"],
            conversation_id=data["conversationId"],
            sender_staff_id=data["senderStaffId"],
        )
        await bot.api.stream_card(card_id, "content", "Hel")
        if screen is not None:
            await screen.shows("bot> Hel")  # let the terminal draw the partial text first
        await bot.api.stream_card(card_id, "content", "Hello there", finalize=True)

    bot = RawStreamClient(url, on_callback=answer)
    return bot


@pytest.mark.parametrize("tty", [False, True])
async def test_chat_shows_a_streamed_card(
    dingtalk_emulator: EmulatorThread,
    tty: bool,
) -> None:
    screen = Screen()
    bot = _streaming_bot(dingtalk_emulator.url, screen if tty else None)
    await bot.connect()
    try:
        code = await chat(
            dingtalk_emulator.url, ID, lines=_lines("hello\n", "/quit\n"), out=screen, tty=tty
        )
    finally:
        await bot.close()
    assert code == 0
    output = screen.getvalue()
    assert output.count("bot> Hello there") == 1
    if tty:
        assert "bot> Hel\n\x1b[1F\x1b[J" in output  # drawn partially, then redrawn in place
    else:
        assert "bot> Hel\n" not in output  # a pipe only gets the final text


async def test_chat_shows_plain_messages_in_a_group(
    dingtalk_emulator: EmulatorThread,
) -> None:
    bot: RawStreamClient

    async def answer(frame: dict[str, Any]) -> None:
        data = json.loads(frame["data"])
        assert (data["conversationType"], data["isInAtList"]) == ("2", True)
        text = f"**echo** {data['text']['content'].strip()}"
        await bot.api.send_by_session(data["sessionWebhook"], markdown=text, title="Echo")

    bot = RawStreamClient(dingtalk_emulator.url, on_callback=answer)
    await bot.connect()
    screen = Screen()
    try:
        code = await chat(dingtalk_emulator.url, None, group=True, lines=_lines("ping"), out=screen)
    finally:
        await bot.close()
    assert code == 0
    assert "bot> **echo** ping\n" in screen.getvalue()


async def test_chat_reports_an_unreachable_emulator_and_an_unknown_app(
    dingtalk_emulator: EmulatorThread,
) -> None:
    unknown = await chat(dingtalk_emulator.url, "nope", lines=_lines(), out=Screen())
    assert unknown == 2
    await dingtalk_emulator.call(lambda e: None)  # the emulator is still fine
    closed = DingTalkEmulator(ping_interval=None)
    url = await closed.start()
    await closed.stop()
    parser = argparse.ArgumentParser()
    chat_arguments(parser)
    args = parser.parse_args(["--emulator", url, "--group", "--user", "bob"])
    assert (args.app, args.group, args.user) == (None, True, "bob")
    assert await chat_main(args) == 1


# -- standalone ------------------------------------------------------------------------------------
