"""SIGKILL mid-reply, then restart: the stuck card is closed and the message answered once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from channels.dingtalk.emulator import EmulatorThread
from channels.recovery import INTERRUPTED_NOTE
from channels.wukongim.emulator import WuKongIMEmulatorThread
from channels.zim.emulator import ZimEmulatorThread
from tests import easemob_support as em
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import (
    DINGTALK_CLIENT_ID,
    dingtalk_emulator,
)
from tests.e2e_support import DaemonProcess
from tests.feishu_support import (
    FEISHU_APP_ID,
    FeishuEmulatorThread,
    feishu_emulator,
)
from tests.recovery_support import (
    cards_of,
    crash_mid_answer,
    dingtalk_channel,
    feishu_channel,
    webhooks_section,
    write_config,
)
from tests.wukongim_support import BOT as WK_BOT
from tests.wukongim_support import FAST as WK_FAST
from tests.zim_support import APP_ID as ZIM_APP_ID
from tests.zim_support import FAST as ZIM_FAST
from tests.zim_support import ROBOT as ZIM_ROBOT
from tests.zim_support import SECRET as ZIM_SECRET
from tools.bench.procs import free_port
from tools.fake_llm import FakeLLM

WK_KEY = "wk-webhook-key-0123456789"

__all__ = ["dingtalk_emulator", "fake_llm_fixture", "feishu_emulator"]


def crash_mid_reply(
    tmp_path: Path, emulator: EmulatorThread, llm: FakeLLM, window: float
) -> AbstractAsyncContextManager[tuple[Any, DaemonProcess]]:
    config = write_config(
        tmp_path,
        llm,
        dingtalk_channel(emulator.url, 0.05),
        daemon=f"recovery_window_minutes = {window}",
    )

    async def ask() -> Any:
        sent = await emulator.send_user_message(DINGTALK_CLIENT_ID, text="tell me a long story")
        assert sent.delivered
        return sent

    async def shown(sent: Any) -> None:
        await emulator.wait_for(
            lambda e: any(c["text"] for c in cards_of(e.chat_view(sent.conversation_id))), 15
        )

    return crash_mid_answer(config, "dt", llm, ask, shown)


async def test_a_fresh_message_is_answered_again_and_the_stuck_card_closed(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    async with crash_mid_reply(tmp_path, dingtalk_emulator, fake_llm, window=10) as (sent, _):

        def answered_again(e: Any) -> dict[str, Any] | None:
            view: dict[str, Any] = e.chat_view(sent.conversation_id)
            cards = cards_of(view)
            done = len(cards) == 2 and all(c["flow_status"] in {"3", "5"} for c in cards)
            return view if done else None

        view = await dingtalk_emulator.wait_for(answered_again, 20)
        assert view is not None  # wait_for returns only a truthy value
        stuck, fresh = cards_of(view)
        assert stuck["flow_status"] == "5"
        assert INTERRUPTED_NOTE in stuck["text"]
        assert stuck["text"].startswith("Echo:")  # it kept what the user had already seen
        assert fresh["flow_status"] == "3"
        assert fresh["text"] == "Echo: tell me a long story"
        assert [i for i in view["items"] if i["kind"] not in {"card", "user"}] == []
        # the user's turn is in the conversation once, not twice
        last = fake_llm.requests[-1].messages
        assert [m["content"] for m in last if m["role"] == "user"] == ["tell me a long story"]


async def test_a_stale_message_gets_a_clear_request_to_resend(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    async with crash_mid_reply(tmp_path, dingtalk_emulator, fake_llm, window=0) as (sent, _):

        def told(e: Any) -> dict[str, Any] | None:
            view: dict[str, Any] = e.chat_view(sent.conversation_id)
            return view if any(i["kind"] not in {"card", "user"} for i in view["items"]) else None

        view = await dingtalk_emulator.wait_for(told, 20)
        assert view is not None
        notes = [i["text"] for i in view["items"] if i["kind"] not in {"card", "user"}]
        assert len(notes) == 1
        assert "Please send it again" in notes[0]
        assert cards_of(view)[0]["flow_status"] == "5"
        assert len(cards_of(view)) == 1


async def test_feishu_recovery_closes_the_stuck_card_and_answers_once(
    tmp_path: Path, feishu_emulator: FeishuEmulatorThread, fake_llm: FakeLLM
) -> None:
    config = write_config(tmp_path, fake_llm, feishu_channel(feishu_emulator.url, 0.1))

    async def ask() -> Any:
        sent = await feishu_emulator.send_user_message(FEISHU_APP_ID, text="tell me a long story")
        assert sent.delivered
        return sent

    async def shown(sent: Any) -> None:
        await feishu_emulator.wait_for(
            lambda e: any(
                c["text"].startswith("Echo") for c in cards_of(e.chat_view(sent.chat_id))
            ),
            15,
        )

    async with crash_mid_answer(config, "fs", fake_llm, ask, shown) as (sent, _):

        def answered_again(e: Any) -> dict[str, Any] | None:
            view: dict[str, Any] = e.chat_view(sent.chat_id)
            cards = cards_of(view)
            return view if len(cards) == 2 and all(c["done"] for c in cards) else None

        view = await feishu_emulator.wait_for(answered_again, 20)
        assert view is not None
        stuck, fresh = cards_of(view)
        assert INTERRUPTED_NOTE in stuck["text"] and stuck["text"].startswith("Echo:")
        assert fresh["text"] == "Echo: tell me a long story"
        assert [i for i in view["items"] if i["kind"] not in {"card", "user"}] == []
        # the taken-over card's sequence started above anything the first process used
        assert not [c for c in await feishu_emulator.calls() if c.code == 300317]


def shown_once(
    emulator: Any, bot_items: Callable[[Any, str], list[dict[str, Any]]]
) -> Callable[[Any], Awaitable[object]]:
    """`shown` for `crash_mid_answer`: the bot's first text is in the chat."""

    async def shown(sent: Any) -> object:
        return await emulator.wait_for(
            lambda e: any(i["text"] for i in bot_items(e, sent.chat_id)), 15
        )

    return shown


def cards_in(e: Any, chat_id: str) -> list[dict[str, Any]]:
    return cards_of(e.chat_view(chat_id))


async def test_wukongim_recovery_closes_the_open_stream_once_and_answers_once(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    port = free_port()  # the emulator must know the webhook URL across both processes
    channel = f"""id = "wk"
type = "wukongim"
bot_uid = "{WK_BOT}"
webhook_key = "{WK_KEY}"
card_update_interval = 0.05
"""
    async with WuKongIMEmulatorThread(
        webhook=f"http://127.0.0.1:{port}/hooks/wk?key={WK_KEY}", **WK_FAST
    ) as emulator:
        config = write_config(
            tmp_path,
            fake_llm,
            channel + f'api_base = "{emulator.url}"\n',
            sections=webhooks_section(port),
        )

        async def ask() -> Any:
            return await emulator.send_user_message(
                WK_BOT, from_uid="u1", text="tell me a long story"
            )

        async with crash_mid_answer(
            config, "wk", fake_llm, ask, shown_once(emulator, cards_in)
        ) as (sent, _):

            def both_done(e: Any) -> list[dict[str, Any]] | None:
                found = cards_in(e, sent.chat_id)
                return found if len(found) == 2 and all(c["done"] for c in found) else None

            done = await emulator.wait_for(both_done, 20)
            assert done is not None
            stuck, fresh = done
            assert stuck["text"].startswith("Echo:") and INTERRUPTED_NOTE in stuck["text"]
            assert fresh["text"] == "Echo: tell me a long story"
            events = await emulator.events(stuck["client_msg_no"])
            ends = [e.event_type for e in events if e.event_type != "stream.delta"]
            assert ends == ["stream.close", "stream.finish"]  # closed once
            view = await emulator.chat_view(sent.chat_id)
            assert view is not None
            assert [i for i in view["items"] if i["kind"] == "message"] == []


async def test_zim_recovery_ends_the_edited_message_once_and_answers_once(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    port = free_port()  # the emulator must know the callback URL across both processes
    channel = f"""id = "zim"
type = "zim"
app_id = {ZIM_APP_ID}
server_secret = "{ZIM_SECRET}"
robot_id = "{ZIM_ROBOT}"
card_update_interval = 0.05
"""
    async with ZimEmulatorThread(
        callback=f"http://127.0.0.1:{port}/hooks/zim", **ZIM_FAST
    ) as emulator:
        config = write_config(
            tmp_path,
            fake_llm,
            channel + f'api_base = "{emulator.url}"\n',
            sections=webhooks_section(port),
        )

        async def ask() -> Any:
            sent = await emulator.send_user_message(
                ZIM_ROBOT, from_user_id="user_1", text="tell me a long story"
            )
            assert sent.delivered
            return sent

        async with crash_mid_answer(
            config, "zim", fake_llm, ask, shown_once(emulator, cards_in)
        ) as (sent, _):

            def both_answered(e: Any) -> list[dict[str, Any]] | None:
                found = cards_in(e, sent.chat_id)
                full = "Echo: tell me a long story"
                ended = len(found) == 2 and INTERRUPTED_NOTE in found[0]["text"]
                return found if ended and found[1]["text"] == full else None

            done = await emulator.wait_for(both_answered, 20)
            assert done is not None
            stuck, _fresh = done
            assert stuck["text"].startswith("Echo:")
            message = await emulator.message(stuck["id"])
            assert message is not None
            # edited to its end once: the note appears in its last text only
            assert [INTERRUPTED_NOTE in t for t in message.texts].count(True) == 1
            assert INTERRUPTED_NOTE in message.texts[-1]
            sends = [c for c in await emulator.calls() if c.action == "SendPeerMessage"]
            assert len(sends) == 2  # the stuck message and the new answer, nothing more


def easemob_channel(emulator_url: str, stream: str) -> str:
    return f"""id = "em"
type = "easemob"
api_base = "{emulator_url}"
org_name = "{em.ORG}"
app_name = "{em.APP}"
client_id = "{em.CLIENT_ID}"
client_secret = "{em.CLIENT_SECRET}"
callback_secret = "{em.CALLBACK_SECRET}"
bot_user = "{em.BOT}"
stream = "{stream}"
card_update_interval = 0.05
"""


def easemob_bot_items(e: Any, chat_id: str) -> list[dict[str, Any]]:
    view = e.chat_view(chat_id) or {"items": []}
    return [i for i in view["items"] if i["sender"] == em.BOT]


async def test_easemob_recovery_answers_a_message_cut_off_mid_answer_once(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    """stream = "off": nothing showed before the crash, so the restart answers it, once."""
    port = free_port()  # the emulator must know the callback URL across both processes
    async with em.started(None, callback=f"http://127.0.0.1:{port}/hooks/em") as emulator:
        config = write_config(
            tmp_path,
            fake_llm,
            easemob_channel(emulator.url, "off"),
            sections=webhooks_section(port),
        )

        async def ask() -> Any:
            sent = await emulator.send_user_message(em.BOT, from_user="u1", text="tell me a story")
            assert sent.delivered
            return sent

        async def under_way(_sent: Any) -> None:
            # nothing shows with stream off: the answer is under way, stalled mid-stream
            async with asyncio.timeout(15):
                while not fake_llm.requests:
                    await asyncio.sleep(0.02)

        async with crash_mid_answer(config, "em", fake_llm, ask, under_way) as (sent, second):
            done = await emulator.wait_for(lambda e: easemob_bot_items(e, sent.chat_id), 20)
            assert done
            await second.wait_log("recovered after restart")
            view = await emulator.chat_view(sent.chat_id)
            assert view is not None
            bot = [i["text"] for i in view["items"] if i["sender"] == em.BOT]
            assert bot == ["Echo: tell me a story"]
            assert len(fake_llm.requests) == 2


async def test_easemob_recovery_ends_the_rewritten_message_once_and_answers_once(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    port = free_port()
    async with em.started(
        None, callback=f"http://127.0.0.1:{port}/hooks/em", rewrite=True
    ) as emulator:
        config = write_config(
            tmp_path,
            fake_llm,
            easemob_channel(emulator.url, "edit"),
            sections=webhooks_section(port),
        )

        async def ask() -> Any:
            return await emulator.send_user_message(em.BOT, from_user="u1", text="tell me a story")

        async with crash_mid_answer(
            config, "em", fake_llm, ask, shown_once(emulator, easemob_bot_items)
        ) as (sent, _):

            def both_answered(e: Any) -> list[dict[str, Any]] | None:
                found = easemob_bot_items(e, sent.chat_id)
                ended = len(found) == 2 and INTERRUPTED_NOTE in found[0]["text"]
                return found if ended and found[1]["text"] == "Echo: tell me a story" else None

            done = await emulator.wait_for(both_answered, 20)
            assert done is not None
            stuck = await emulator.card(done[0]["id"])
            # rewritten to its end once: the note appears in its last text only
            assert [INTERRUPTED_NOTE in t for t in stuck.texts].count(True) == 1
            sends = [c for c in await emulator.calls() if c.path.endswith("/messages/users")]
            assert len(sends) == 2  # the stuck message and the new answer, nothing more
