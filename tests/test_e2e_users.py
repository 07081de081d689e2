"""Users end to end: one daemon with a DingTalk and a Feishu channel on their emulators, the fake
LLM behind both. A person the users file lists on both platforms is one user; with on_miss
"refuse" a stranger is told so and no agent is asked; a blocked user is told once, then silence;
without [users] every identity stays a user of its own, as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from channels.dingtalk.emulator import EmulatorThread
from channels.model import ChannelState
from channels.users.resolver import BLOCKED_TEXT, REFUSED_TEXT
from daemon.app import Daemon
from daemon.config import validate
from storage import JournalState
from storage.models import InboundJournal
from tests.agents_support import FAKE_LLM_KEY, fake_llm_fixture
from tests.dingtalk_support import (
    DINGTALK_CLIENT_ID,
    DINGTALK_CLIENT_SECRET,
    DINGTALK_TEMPLATE,
    dingtalk_emulator,
)
from tests.e2e_support import FAST_BACKOFF, wait_until
from tests.feishu_support import FEISHU_APP_ID, FEISHU_APP_SECRET, feishu_emulator
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture", "feishu_emulator"]

PEOPLE = """
[[users]]
name = "Ada Lovelace"
email = "ada@example.com"
groups = ["engineering"]
identities = [{platform = "dingtalk", user_id = "staff-ada"},
              {platform = "feishu", user_id = "ou_ada"}]
"""


class Both:
    """A running daemon with channel "dt" on DingTalk and "fs" on Feishu."""

    def __init__(self, daemon: Daemon, dingtalk: EmulatorThread, feishu: Any) -> None:
        self.daemon = daemon
        self.dingtalk = dingtalk
        self.feishu = feishu
        self.sent = 0  # messages sent to the bot

    @property
    def store(self) -> Any:
        assert self.daemon.store is not None
        return self.daemon.store

    async def connected(self) -> None:
        manager = self.daemon.manager
        assert manager is not None
        await wait_until(
            lambda: all(manager.status(c).state is ChannelState.CONNECTED for c in ("dt", "fs"))
        )

    async def settled(self) -> None:
        """The message just sent is journaled and its row settled, as every one before it."""
        self.sent += 1
        ended = {JournalState.REPLIED.value, JournalState.FAILED.value}
        async with asyncio.timeout(10):
            while True:
                rows = await self.journal()
                if len(rows) == self.sent and all(state in ended for state, _ in rows):
                    return
                await asyncio.sleep(0.02)

    async def on_dingtalk(self, staff_id: str, text: str) -> list[dict[str, Any]]:
        """What the bot showed in the DingTalk chat once the answer (or refusal) settled."""
        sent = await self.dingtalk.send_user_message(
            DINGTALK_CLIENT_ID, text=text, sender_staff_id=staff_id, sender_nick=staff_id
        )
        assert sent.delivered, sent.reason
        await self.settled()
        view = await self.dingtalk.chat_view(sent.conversation_id)
        return [i for i in (view or {"items": []})["items"] if i["kind"] != "user"]

    async def on_feishu(self, open_id: str, text: str) -> list[dict[str, Any]]:
        """What the bot showed in the Feishu chat once the answer settled."""
        sent = await self.feishu.send_user_message(
            FEISHU_APP_ID, text=text, sender_open_id=open_id, sender_name=open_id
        )
        assert sent.delivered, sent.reason
        await self.settled()
        view = await self.feishu.chat_view(sent.chat_id)
        return [i for i in (view or {"items": []})["items"] if i["kind"] != "user"]

    def resolutions(self, mapper: str, outcome: str) -> float:
        found = self.daemon.metrics.registry.get_sample_value(
            "channeld_user_resolutions_total", {"mapper": mapper, "outcome": outcome}
        )
        return found or 0.0

    async def journal(self) -> list[tuple[str, str | None]]:
        """Every journal row's state and error, in the order received."""
        table = InboundJournal.__table__  # type: ignore[attr-defined]  # SQLModel's table
        statement = sa.select(table.c.state, table.c.error).order_by(table.c.id)
        async with self.store.engine.connect() as connection:
            return [(row.state, row.error) for row in await connection.execute(statement)]


def config(
    dingtalk: EmulatorThread, feishu: Any, llm: FakeLLM, state_dir: Path, users: dict[str, Any]
) -> dict[str, Any]:
    """Both channels, answered by the fake LLM, with `users` as the [users] section."""
    return {
        "daemon": {"state_dir": str(state_dir), "graceful_timeout": 0},
        "admin": {"listen": "127.0.0.1:0"},
        "agents": {
            "default": {
                "type": "openai",
                "base_url": llm.url,
                "api_key": FAKE_LLM_KEY,
                "model": "fake-model",
                "timeout": 10,
            }
        },
        "channels": [
            {
                "id": "dt",
                "type": "dingtalk",
                "agent": "default",
                "client_id": DINGTALK_CLIENT_ID,
                "client_secret": DINGTALK_CLIENT_SECRET,
                "card_template_id": DINGTALK_TEMPLATE,
                "api_base": dingtalk.url,
                "card_update_interval": 0.05,
                "request_timeout": 3,
            },
            {
                "id": "fs",
                "type": "feishu",
                "agent": "default",
                "app_id": FEISHU_APP_ID,
                "app_secret": FEISHU_APP_SECRET,
                "domain": feishu.url,
                "card_update_interval": 0.1,
                "request_timeout": 3,
            },
        ],
        "users": users,
    }


@pytest.fixture
async def both(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    dingtalk_emulator: EmulatorThread,
    feishu_emulator: Any,
    fake_llm: FakeLLM,
) -> AsyncIterator[Both]:
    """The daemon with the [users] section the test parametrizes (none: the defaults)."""
    users = dict(getattr(request, "param", {}))
    if users.get("users_file") == "PEOPLE":
        path = tmp_path / "users.toml"
        path.write_text(PEOPLE, encoding="utf-8")
        users["users_file"] = str(path)
    settings = validate(config(dingtalk_emulator, feishu_emulator, fake_llm, tmp_path, users))
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    running = Both(daemon, dingtalk_emulator, feishu_emulator)
    try:
        await running.connected()
        yield running
    finally:
        await daemon.stop()


def card_text(items: list[dict[str, Any]]) -> str:
    """The text of the chat's latest answer card."""
    cards = [i for i in items if i["kind"] == "card"]
    assert cards, items
    return str(cards[-1]["text"])


@pytest.mark.parametrize("both", [{"mapper": "file", "users_file": "PEOPLE"}], indirect=True)
async def test_one_person_on_dingtalk_and_feishu_is_one_user(both: Both, fake_llm: FakeLLM) -> None:
    assert card_text(await both.on_dingtalk("staff-ada", "hello from dingtalk")).endswith(
        "hello from dingtalk"
    )
    assert card_text(await both.on_feishu("ou_ada", "hello from feishu")).endswith(
        "hello from feishu"
    )
    found = await both.store.list_users(search="ada", limit=10)
    assert [u.display_name for u in found] == ["Ada Lovelace"]
    user = found[0]
    assert (user.email, user.groups, user.auth_source) == (
        "ada@example.com",
        ("engineering",),
        "file",
    )
    shown = await both.store.get_user(user.id)
    assert shown is not None
    assert sorted((i.platform, i.platform_user_id) for i in shown[1]) == [
        ("dingtalk", "staff-ada"),
        ("feishu", "ou_ada"),
    ]
    assert len(fake_llm.requests) == 2
    assert both.resolutions("file", "hit") == 2
    # someone the file does not list is still answered (on_miss = "create"), as a user of
    # their own
    assert card_text(await both.on_dingtalk("staff-bob", "and me?")).endswith("and me?")
    assert both.resolutions("file", "created") == 1


@pytest.mark.parametrize(
    "both", [{"mapper": "file", "users_file": "PEOPLE", "on_miss": "refuse"}], indirect=True
)
async def test_a_stranger_is_refused_and_reaches_no_agent(both: Both, fake_llm: FakeLLM) -> None:
    items = await both.on_dingtalk("staff-eve", "let me in")
    assert [i.get("text") for i in items] == [REFUSED_TEXT]
    items = await both.on_feishu("ou_eve", "let me in")
    assert [(i["kind"], i["text"]) for i in items] == [("message", REFUSED_TEXT)]
    assert fake_llm.requests == []
    assert await both.store.list_users(search="eve", limit=10) == []  # no user was made
    assert await both.journal() == [
        (JournalState.REPLIED.value, None),
        (JournalState.REPLIED.value, None),
    ]
    assert both.resolutions("file", "refused") == 2
    # the listed person is answered
    assert card_text(await both.on_dingtalk("staff-ada", "me too")).endswith("me too")


async def test_auto_mode_keeps_one_user_per_identity_and_blocks(
    both: Both, fake_llm: FakeLLM
) -> None:
    assert card_text(await both.on_dingtalk("staff-ada", "first")).endswith("first")
    assert card_text(await both.on_feishu("ou_ada", "second")).endswith("second")
    assert len(await both.store.list_users(search="ada", limit=10)) == 2  # no directory
    assert both.daemon.users is not None
    await both.daemon.users.write_seen()  # what the background round does every 30 s
    [dingtalk_user] = await both.store.list_users(search="dingtalk-staff-ada@", limit=10)
    assert dingtalk_user.email == "dingtalk-staff-ada@im-platform.invalid"
    assert dingtalk_user.auth_source == "dingtalk"
    assert dingtalk_user.last_seen_at is not None
    assert await both.store.set_blocked(dingtalk_user.id, True, now=dingtalk_user.created_at)
    await both.daemon.users.refresh_blocked()  # what the admin API's block does at once
    asked = len(fake_llm.requests)
    items = await both.on_dingtalk("staff-ada", "still there?")
    assert [i.get("text") for i in items][-1] == BLOCKED_TEXT
    items = await both.on_dingtalk("staff-ada", "hello?")
    assert [i.get("text") for i in items].count(BLOCKED_TEXT) == 1  # told once a day
    assert len(fake_llm.requests) == asked
    assert (await both.journal())[-2:] == [
        (JournalState.REPLIED.value, None),
        (JournalState.FAILED.value, "blocked"),
    ]
    # the same person on Feishu is another user: not blocked
    assert card_text(await both.on_feishu("ou_ada", "third")).endswith("third")


@pytest.mark.parametrize(
    "both", [{"mapper": "file", "users_file": "PEOPLE", "on_miss": "refuse"}], indirect=True
)
async def test_the_users_file_is_read_again_on_reload(both: Both, tmp_path: Path) -> None:
    assert [i.get("text") for i in await both.on_dingtalk("staff-carl", "hi")] == [REFUSED_TEXT]
    path = tmp_path / "users.toml"
    path.write_text("[[users]]\nname = 'Carl'\nidentities = [{platform = 1}]\n", "utf-8")
    await both.daemon.reload(both.daemon.settings)  # what SIGHUP does
    # a file that does not validate is refused: the previous one still answers
    items = await both.on_dingtalk("staff-ada", "still me")
    assert card_text(items).endswith("still me")
    carl = (
        '[[users]]\nname = "Carl"\nidentities = [{platform = "dingtalk", user_id = "staff-carl"}]\n'
    )
    path.write_text(PEOPLE + carl, "utf-8")
    await both.daemon.reload(both.daemon.settings)
    assert card_text(await both.on_dingtalk("staff-carl", "now?")).endswith("now?")
    assert [u.display_name for u in await both.store.list_users(search="carl", limit=5)] == ["Carl"]
