"""Users in the admin plane: the /api/v1/users routes and `channeld users`, against a real daemon.

People are made the ways the daemon makes them (the store's auto mode and a directory's person),
then searched, shown, linked, unlinked, blocked and unblocked through the real API and CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from channels.dingtalk.emulator import EmulatorThread
from channels.model import ChannelState
from daemon.app import Daemon
from daemon.channels_args import TOKEN_ENV
from daemon.config import validate
from daemon.users_cli import register, users_table
from storage.repository import Store
from tests.dingtalk_support import DINGTALK_CLIENT_ID, DINGTALK_CLIENT_SECRET, dingtalk_emulator
from tests.e2e_support import FAST_BACKOFF, Stack, settings_for, start_stack, wait_until
from tests.feishu_support import (
    FEISHU_APP_ID,
    FEISHU_APP_SECRET,
    FeishuEmulatorThread,
    feishu_emulator,
)

__all__ = ["dingtalk_emulator", "feishu_emulator"]

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
IDLE = timedelta(hours=12)


class Admin:
    """The admin API with the daemon's own (generated) token."""

    def __init__(self, http: aiohttp.ClientSession, daemon: Daemon) -> None:
        assert daemon.admin is not None
        self.base = f"http://127.0.0.1:{daemon.admin.port}/api/v1"
        self.http = http
        self.headers = {"Authorization": f"Bearer {daemon.admin.token}"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = dict(self.headers)
        if method != "GET":
            headers["Content-Type"] = "application/json"
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.json() if r.content_type == "application/json" else None

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = await self.call(method, path, body)
        assert status == 200, (method, path, status, payload)
        return payload

    async def error(self, method: str, path: str, body: Any = None) -> tuple[int, str]:
        status, payload = await self.call(method, path, body)
        assert status >= 400, (method, path, payload)
        return status, str(payload["error"]["code"])


@dataclass
class People:
    """Who the seeded database knows."""

    wang: str  # a directory person, with a DingTalk identity
    feishu_wang: str  # the same person on Feishu, still an auto user of their own
    li: str  # an auto user with a name full of LIKE wildcards


async def seed(store: Store) -> People:
    wang = await store.user_for_person(
        directory_id="file:wang.wei@example.com",
        name="Wang Wei",
        email="wang.wei@example.com",
        groups=["sales", "beijing"],
        auth_source="file",
        now=NOW,
    )
    await store.link_identity("dingtalk", "corp-1", "staff-1", wang, display_name="Wang", now=NOW)
    feishu_wang = await store.resolve_user("feishu", "tenant-9", "ou_7d8a6e", "王伟")
    li = await store.resolve_user("dingtalk", "corp-1", "staff-2", "Li_100%")
    return People(wang, feishu_wang, li)


@pytest.fixture
async def stack(tmp_path: Path, dingtalk_emulator: EmulatorThread) -> AsyncIterator[Stack]:
    """A daemon with the channel "dt" on the DingTalk emulator and a generated admin token."""
    running = await start_stack(tmp_path, dingtalk_emulator, None)
    try:
        await running.connected()
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[Admin]:
    async with aiohttp.ClientSession() as http:
        yield Admin(http, stack.daemon)


@pytest.fixture
async def people(stack: Stack) -> People:
    assert stack.daemon.store is not None
    return await seed(stack.daemon.store)


def identity_of(user: dict[str, Any], platform: str) -> dict[str, Any]:
    found = [i for i in user["identities"] if i["platform"] == platform]
    assert len(found) == 1, user["identities"]
    identity: dict[str, Any] = found[0]
    return identity


async def test_users_are_listed_and_searched_by_name_email_and_platform_id(
    admin: Admin, people: People
) -> None:
    users = (await admin.ok("GET", "/users"))["users"]
    assert {u["id"] for u in users} == {people.wang, people.feishu_wang, people.li}
    assert all("identities" not in u for u in users)

    async def found(search: str) -> list[str]:
        query = quote(search, safe="")
        return sorted(u["id"] for u in (await admin.ok("GET", f"/users?search={query}"))["users"])

    assert await found("wang wei") == [people.wang]  # the name, whatever its case
    assert await found("WANG.WEI@EXAMPLE") == [people.wang]  # the e-mail
    assert await found("ou_7d8a6e") == [people.feishu_wang]  # a platform user id
    assert await found("王伟") == [people.feishu_wang]  # an identity's display name
    assert await found("100%") == [people.li]  # wildcards are plain characters
    assert await found("%") == [people.li]
    assert await found("_") == sorted([people.li, people.feishu_wang])
    assert await found("nobody") == []
    assert len((await admin.ok("GET", "/users?limit=1"))["users"]) == 1
    assert await admin.error("GET", "/users?limit=0") == (422, "validation_error")


async def test_a_person_is_shown_with_groups_and_identities(admin: Admin, people: People) -> None:
    wang = await admin.ok("GET", f"/users/{people.wang}")
    assert wang["name"] == "Wang Wei"
    assert wang["email"] == "wang.wei@example.com"
    assert wang["groups"] == ["sales", "beijing"]
    assert wang["auth_source"] == "file"
    assert wang["directory_id"] == "file:wang.wei@example.com"
    assert wang["blocked"] is False
    identity = identity_of(wang, "dingtalk")
    assert identity["tenant"] == "corp-1"
    assert identity["platform_user_id"] == "staff-1"
    assert identity["user_id"] == people.wang
    assert isinstance(identity["id"], int)
    auto = await admin.ok("GET", f"/users/{people.feishu_wang}")
    assert auto["email"] is None and auto["directory_id"] is None
    assert await admin.error("GET", "/users/nobody") == (404, "not_found")


async def test_identities_are_linked_and_unlinked_by_hand(admin: Admin, people: People) -> None:
    feishu = identity_of(await admin.ok("GET", f"/users/{people.feishu_wang}"), "feishu")
    linked = await admin.ok(
        "POST", f"/users/{people.wang}/identities", {"identity_id": feishu["id"]}
    )
    assert {i["platform"] for i in linked["identities"]} == {"dingtalk", "feishu"}
    assert identity_of(linked, "feishu")["user_id"] == people.wang
    # the user the identity left stays (its conversations with it), without identities
    assert (await admin.ok("GET", f"/users/{people.feishu_wang}"))["identities"] == []
    # linking again changes nothing
    again = await admin.ok(
        "POST", f"/users/{people.wang}/identities", {"identity_id": feishu["id"]}
    )
    assert len(again["identities"]) == 2

    moved = await admin.ok("DELETE", f"/users/{people.wang}/identities/{feishu['id']}")
    assert moved["id"] == feishu["id"] and moved["platform_user_id"] == "ou_7d8a6e"
    assert moved["user_id"] not in (people.wang, people.feishu_wang)
    fresh = await admin.ok("GET", f"/users/{moved['user_id']}")
    assert fresh["auth_source"] == "auto"
    assert [i["id"] for i in fresh["identities"]] == [feishu["id"]]
    assert [
        i["platform"] for i in (await admin.ok("GET", f"/users/{people.wang}"))["identities"]
    ] == ["dingtalk"]

    # an identity unlinks only from the user it belongs to
    path = f"/users/{people.wang}/identities/{feishu['id']}"
    assert await admin.error("DELETE", path) == (404, "not_found")
    assert await admin.error("DELETE", f"/users/nobody/identities/{feishu['id']}") == (
        404,
        "not_found",
    )
    for bad in ("abc", "0", "-1", "99999999999999999999"):
        status, code = await admin.error("DELETE", f"/users/{people.wang}/identities/{bad}")
        assert (status, code) == (422, "validation_error"), bad
    link = f"/users/{people.wang}/identities"
    assert await admin.error("POST", link, {"identity_id": 987654}) == (404, "not_found")
    assert await admin.error("POST", "/users/nobody/identities", {"identity_id": feishu["id"]}) == (
        404,
        "not_found",
    )
    for body in (
        {},
        {"identity_id": "x"},
        {"identity_id": str(feishu["id"])},
        {"identity_id": True},
        {"identity_id": 1.5},
        {"identity_id": 2**63},
    ):
        assert await admin.error("POST", link, body) == (422, "validation_error"), body
    assert await admin.error("POST", link, ["not", "an", "object"]) == (400, "bad_request")


async def test_a_person_is_blocked_and_unblocked(
    admin: Admin, people: People, stack: Stack
) -> None:
    users = stack.daemon.users
    assert users is not None
    blocked = await admin.ok("POST", f"/users/{people.li}/block")
    assert blocked["blocked"] is True and blocked["id"] == people.li
    assert users.is_blocked(people.li)  # at once, not at the resolver's next round
    assert [u["blocked"] for u in (await admin.ok("GET", "/users?search=100%25"))["users"]] == [
        True
    ]
    assert (await admin.ok("POST", f"/users/{people.li}/unblock"))["blocked"] is False
    assert not users.is_blocked(people.li)
    assert (await admin.ok("GET", f"/users/{people.li}"))["blocked"] is False
    assert await admin.error("POST", "/users/nobody/block") == (404, "not_found")
    assert await admin.error("POST", "/users/nobody/unblock") == (404, "not_found")


async def test_conversations_name_the_person_who_writes(admin: Admin, stack: Stack) -> None:
    sent = await stack.say("hello users", sender_staff_id="staff-9", sender_nick="Zhang San")
    await stack.wait_bot_items(
        sent.conversation_id, lambda items: any(i.get("done") for i in items)
    )
    await stack.idle()
    conversations = (await admin.ok("GET", "/conversations?channel=dt"))["conversations"]
    assert len(conversations) == 1
    user = conversations[0]["user"]
    assert user["id"] == conversations[0]["user_id"]
    assert user["name"] == "Zhang San"
    assert user["email"] is None  # an auto user of the store (the resolver adds the domain's)


async def test_a_persons_conversations_are_listed_newest_first(
    admin: Admin, people: People, stack: Stack
) -> None:
    store = stack.daemon.store
    assert store is not None
    opened = []
    for minutes, (channel, key, user) in enumerate(
        [
            ("dt", "direct:staff-1", people.wang),
            ("dt", "direct:staff-2", people.li),
            ("fs", "group:oc_1", people.wang),
        ]
    ):
        conversation, _ = await store.conversation_with_history(
            channel, key, user, idle_reset=IDLE, now=NOW + timedelta(minutes=minutes), limit=1
        )
        opened.append(conversation.id)

    async def listed(query: str) -> list[str]:
        conversations = (await admin.ok("GET", f"/conversations?{query}"))["conversations"]
        return [c["id"] for c in conversations]

    assert await listed(f"user={people.wang}") == [opened[2], opened[0]]
    assert await listed(f"user={people.wang}&channel=dt") == [opened[0]]
    assert await listed(f"user={people.wang}&limit=1") == [opened[2]]
    assert await listed(f"user={people.li}") == [opened[1]]
    assert await listed(f"user={people.feishu_wang}") == []  # a person who never wrote
    [shown] = (await admin.ok("GET", f"/conversations?user={people.li}"))["conversations"]
    assert shown["user"] == {"id": people.li, "name": "Li_100%", "email": None}
    assert await admin.error("GET", "/conversations?user=nobody") == (404, "not_found")


PEOPLE_FILE = """
[[users]]
name = "Ada Lovelace"
email = "ada@example.com"
groups = ["engineering"]
identities = [{platform = "dingtalk", user_id = "staff-ada"},
              {platform = "feishu", user_id = "ou_ada"}]
"""


@pytest.fixture
async def two_platforms(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, feishu_emulator: FeishuEmulatorThread
) -> AsyncIterator[Daemon]:
    """Channels "dt" (DingTalk) and "fs" (Feishu), people from a users file, echo answers."""
    people = tmp_path / "users.toml"
    people.write_text(PEOPLE_FILE, encoding="utf-8")
    base = settings_for(tmp_path, dingtalk_emulator.url, None).model_dump(mode="python")
    dingtalk = {**base["channels"][0], "client_secret": DINGTALK_CLIENT_SECRET}
    feishu = {
        "id": "fs",
        "type": "feishu",
        "agent": "default",
        "app_id": FEISHU_APP_ID,
        "app_secret": FEISHU_APP_SECRET,
        "domain": feishu_emulator.url,
        "card_update_interval": 0.1,
        "request_timeout": 3,
    }
    settings = validate(
        {
            "daemon": {"state_dir": str(tmp_path), "graceful_timeout": 0},
            "admin": {"listen": "127.0.0.1:0"},
            "agents": {"default": {"type": "echo", "delay": 0.01}},
            "channels": [dingtalk, feishu],
            "users": {"mapper": "file", "users_file": str(people)},
        }
    )
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        manager = daemon.manager
        assert manager is not None
        await wait_until(
            lambda: all(manager.status(c).state is ChannelState.CONNECTED for c in ("dt", "fs"))
        )
        yield daemon
    finally:
        await daemon.stop()


async def test_one_person_on_dingtalk_and_feishu_is_one_user_in_the_api(
    two_platforms: Daemon,
    dingtalk_emulator: EmulatorThread,
    feishu_emulator: FeishuEmulatorThread,
) -> None:
    sent = await dingtalk_emulator.send_user_message(
        DINGTALK_CLIENT_ID, text="from dingtalk", sender_staff_id="staff-ada", sender_nick="ada"
    )
    assert sent.delivered, sent.reason
    written = await feishu_emulator.send_user_message(
        FEISHU_APP_ID, text="from feishu", sender_open_id="ou_ada", sender_name="Ada L."
    )
    assert written.delivered, written.reason
    async with aiohttp.ClientSession() as http:
        admin = Admin(http, two_platforms)
        async with asyncio.timeout(10):  # both messages resolved and their conversations opened
            while len((await admin.ok("GET", "/conversations"))["conversations"]) < 2:
                await asyncio.sleep(0.02)
        [ada] = (await admin.ok("GET", "/users"))["users"]
        assert (ada["name"], ada["email"], ada["groups"]) == (
            "Ada Lovelace",
            "ada@example.com",
            ["engineering"],
        )
        assert ada["auth_source"] == "file"
        shown = await admin.ok("GET", f"/users/{ada['id']}")
        assert sorted((i["platform"], i["platform_user_id"]) for i in shown["identities"]) == [
            ("dingtalk", "staff-ada"),
            ("feishu", "ou_ada"),
        ]
        # two chats, one person, named in both
        conversations = (await admin.ok("GET", "/conversations"))["conversations"]
        assert sorted(c["channel_id"] for c in conversations) == ["dt", "fs"]
        assert {json.dumps(c["user"], sort_keys=True) for c in conversations} == {
            json.dumps(
                {"email": "ada@example.com", "id": ada["id"], "name": "Ada Lovelace"},
                sort_keys=True,
            )
        }


# -- the command line ---------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    """Runs `channeld users ...` in-process on a worker thread: main() owns its own loop; the
    token is the one the daemon generated in its state directory."""

    def __init__(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, daemon: Daemon
    ) -> None:
        self._capsys = capsys
        assert daemon.admin is not None
        self.url = f"http://127.0.0.1:{daemon.admin.port}"
        monkeypatch.setenv("STATE_DIRECTORY", str(daemon.settings.daemon.state_dir))
        monkeypatch.setenv("NO_COLOR", "1")
        for name in (TOKEN_ENV, "CHANNELD_CONFIG", "CHANNELD_DAEMON__STATE_DIR"):
            monkeypatch.delenv(name, raising=False)

    async def __call__(self, *argv: str) -> Result:
        parser = argparse.ArgumentParser(prog="channeld")
        register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["users", *argv, "--url", self.url])
        self._capsys.readouterr()
        code = await asyncio.to_thread(args.func, args)
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)

    async def json(self, *argv: str) -> Any:
        result = await self(*argv, "--json")
        assert result.code == 0, result.err
        return json.loads(result.out)


@pytest.fixture
def cli(stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(capsys, monkeypatch, stack.daemon)


async def test_the_command_line_lists_shows_links_unlinks_and_blocks(
    cli: Cli, people: People
) -> None:
    listing = await cli("list")
    assert listing.code == 0, listing.err
    header, *rows = listing.out.splitlines()
    assert header.split() == ["ID", "NAME", "EMAIL", "SOURCE", "BLOCKED", "LAST", "SEEN"]
    assert len(rows) == 3 and any("wang.wei@example.com" in row for row in rows)
    found = await cli.json("list", "--search", "ou_7d8a6e")
    assert [u["id"] for u in found["users"]] == [people.feishu_wang]

    shown = await cli("show", people.wang)
    assert shown.code == 0, shown.err
    assert "sales, beijing" in shown.out and "file:wang.wei@example.com" in shown.out
    assert "staff-1" in shown.out

    feishu = identity_of(await cli.json("show", people.feishu_wang), "feishu")
    linked = await cli("link", people.wang, str(feishu["id"]))
    assert linked.code == 0, linked.err
    assert f"identity {feishu['id']} linked to user {people.wang!r}" in linked.out
    assert "ou_7d8a6e" in linked.out
    unlinked = await cli.json("unlink", people.wang, str(feishu["id"]))
    assert unlinked["user_id"] not in (people.wang, people.feishu_wang)

    blocked = await cli("block", people.li)
    assert blocked.code == 0 and f"user {people.li!r} blocked" in blocked.out
    assert (await cli.json("show", people.li))["blocked"] is True
    assert (await cli.json("unblock", people.li))["blocked"] is False

    missing = await cli("show", "nobody")
    assert (missing.code, missing.out) == (3, "")
    assert "no user 'nobody'" in missing.err
    assert (await cli("link", people.wang, "987654")).code == 3
    assert (await cli("unlink", people.wang, "0")).code == 5
    too_many = await cli("list", "--limit", "5000")
    assert too_many.code == 2 and "--limit" in too_many.err


async def test_the_command_line_without_the_token_is_unauthorized(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "elsewhere"))
    result = await cli("list")
    assert result.code == 6
    assert "missing or wrong bearer token" in result.err


def test_the_table_colours_only_blocked_people() -> None:
    users: list[dict[str, Any]] = [
        {"id": "u1", "name": "Ann", "email": None, "auth_source": "auto", "blocked": True},
        {"id": "u2", "name": "张伟", "email": "z@example.com", "auth_source": "ldap"},
    ]
    plain = users_table(users, colour=False)
    painted = users_table(users, colour=True)
    assert "\x1b" not in plain
    assert painted.count("\x1b[1;31myes\x1b[0m") == 1
    # the wide name takes two columns a character: the e-mail column still lines up
    lines = plain.splitlines()
    assert lines[1].index("-") == lines[2].index("z@") + 2
