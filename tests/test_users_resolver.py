"""The user resolver: auto mode as before, a directory's answer cached, an outage served from
memory for known people and `on_miss` for new ones, blocked users, and the [users] config."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from channels.model import ChannelId, ChatType, InboundMessage, Sender
from channels.users.directory import DirectoryError, Person, Who
from channels.users.file import FileDirectory
from channels.users.http import HttpDirectory
from channels.users.ldap import LdapDirectory
from channels.users.resolver import OnMiss, Resolution, UserResolver, auto_email
from channels.voice.calls import VoiceCalls
from channels.voice.requests import CallError, StartCall
from daemon.app import blocked_user_ids, build_directory
from daemon.config import ConfigurationError, load, validate
from storage import Store
from tests.storage_support import FakeClock, sqlite_url
from tests.test_e2e_voice import ZEGO_JOIN

START = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
PEOPLE = """
[[users]]
name = "Ada Lovelace"
email = "ada@example.com"
groups = ["engineering", "admins"]
identities = [{platform = "dingtalk", user_id = "staff-ada"},
              {platform = "feishu", user_id = "ou_ada", tenant = "t1"}]
"""


class Counts:
    """An observer that keeps what it was told."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.lookups = 0

    def user_resolution(self, mapper: str, outcome: str) -> None:
        self.outcomes[(mapper, outcome)] += 1

    def directory_latency(self, mapper: str, seconds: float) -> None:
        assert seconds >= 0
        self.lookups += 1


class Scripted:
    """A directory whose answers the test sets: a person, None, or an outage."""

    source = "http"

    def __init__(self) -> None:
        self.people: dict[str, Person] = {}
        self.down = False
        self.asked: list[Who] = []
        self.closed = False

    async def lookup(self, who: Who) -> Person | None:
        self.asked.append(who)
        if self.down:
            raise DirectoryError("503 from the directory")
        return self.people.get(who.user_id)

    async def aclose(self) -> None:
        self.closed = True


def message(platform: str, user_id: str, *, tenant: str = "", name: str = "") -> InboundMessage:
    return InboundMessage(
        channel_id=ChannelId("c1"),
        platform=platform,
        message_id=f"m-{user_id}",
        chat_id=f"chat-{user_id}",
        chat_type=ChatType.DIRECT,
        sender=Sender(platform_id=user_id, display_name=name),
        text="hello",
        received_at=START,
        tenant=tenant,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await Store.open(sqlite_url(tmp_path / "channeld.db"), clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


def resolver(
    store: Store,
    directory: Scripted | FileDirectory | None,
    clock: FakeClock,
    counts: Counts,
    *,
    on_miss: OnMiss = OnMiss.CREATE,
) -> UserResolver:
    return UserResolver(
        store, directory, on_miss=on_miss, cache_seconds=600, clock=clock, observer=counts
    )


async def test_auto_mode_is_the_store_own_resolution(store: Store, clock: FakeClock) -> None:
    users = resolver(store, None, clock, Counts())
    await users.start()
    try:
        first = await users.resolve(message("dingtalk", "staff-1", tenant="corp", name="Alice"))
        again = await users.resolve(message("dingtalk", "staff-1", tenant="corp"))
        other = await users.resolve(message("feishu", "staff-1", tenant="corp"))
    finally:
        await users.stop()
    assert (
        first
        == again
        == Resolution(await store.resolve_user("dingtalk", "corp", "staff-1", "Alice"))
    )
    assert other.user_id != first.user_id  # no directory: each identity is its own user
    assert users.mapper == "auto"
    assert auto_email("dingtalk", "staff-1", "im.invalid") == "dingtalk-staff-1@im.invalid"


async def test_auto_users_get_their_email_source_and_last_seen_in_the_background(
    store: Store, clock: FakeClock
) -> None:
    users = UserResolver(store, None, email_domain="im.invalid", clock=clock, observer=Counts())
    made = await users.resolve(message("dingtalk", "staff-1", tenant="corp", name="Alice"))
    found = await store.get_user(made.user_id)
    assert found is not None and found[0].email is None  # nothing written on the answer path
    clock.advance(timedelta(minutes=5))
    await users.resolve(message("dingtalk", "staff-1", tenant="corp"))
    await users.write_seen()
    found = await store.get_user(made.user_id)
    assert found is not None
    user = found[0]
    assert (user.email, user.auth_source) == ("dingtalk-staff-1@im.invalid", "dingtalk")
    assert user.last_seen_at == clock()


async def test_two_platforms_listed_for_one_person_are_one_user(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    path = tmp_path / "users.toml"
    path.write_text(PEOPLE, encoding="utf-8")
    counts = Counts()
    users = resolver(store, FileDirectory(path), clock, counts)
    ding = await users.resolve(message("dingtalk", "staff-ada", tenant="corp", name="Ada"))
    lark = await users.resolve(message("feishu", "ou_ada", tenant="t1", name="Ada L."))
    assert ding.user_id == lark.user_id != ""
    assert ding.groups == ("engineering", "admins")
    found = await store.get_user(ding.user_id)
    assert found is not None
    user, identities = found
    assert (user.display_name, user.email, user.auth_source) == (
        "Ada Lovelace",
        "ada@example.com",
        "file",
    )
    assert {(i.platform, i.platform_user_id) for i in identities} == {
        ("dingtalk", "staff-ada"),
        ("feishu", "ou_ada"),
    }
    assert counts.outcomes == {("file", "hit"): 2}
    await users.write_seen()  # a directory's person keeps the directory's e-mail and source
    found = await store.get_user(ding.user_id)
    assert found is not None
    assert (found[0].email, found[0].auth_source) == ("ada@example.com", "file")
    assert found[0].last_seen_at == clock()


async def test_a_returning_person_costs_no_lookup_within_the_cache(
    store: Store, clock: FakeClock
) -> None:
    directory = Scripted()
    directory.people["u1"] = Person("http:7", "Bea", "bea@example.com", ("sales",))
    counts = Counts()
    users = resolver(store, directory, clock, counts)
    first = await users.resolve(message("feishu", "u1"))
    clock.advance(timedelta(seconds=599))
    assert await users.resolve(message("feishu", "u1")) == first
    assert len(directory.asked) == 1
    clock.advance(timedelta(seconds=2))  # past cache_seconds: asked again
    assert await users.resolve(message("feishu", "u1")) == first
    assert len(directory.asked) == 2
    assert counts.outcomes == {("http", "hit"): 2, ("http", "cached"): 1}
    assert counts.lookups == 2


async def test_an_outage_serves_known_people_and_sends_new_ones_to_on_miss(
    store: Store, clock: FakeClock
) -> None:
    directory = Scripted()
    directory.people["known"] = Person("http:1", "Kim", groups=("ops",))
    counts = Counts()
    users = resolver(store, directory, clock, counts, on_miss=OnMiss.REFUSE)
    known = await users.resolve(message("dingtalk", "known"))
    clock.advance(timedelta(hours=2))  # the cache expired
    directory.down = True
    assert await users.resolve(message("dingtalk", "known")) == known
    # served from memory for a while: the next message does not wait for the directory again
    assert await users.resolve(message("dingtalk", "known")) == known
    assert len(directory.asked) == 2
    assert await users.resolve(message("dingtalk", "stranger")) == Resolution("", refused=True)
    # the stranger is asked about again at their next message, not refused from memory
    directory.down = False
    directory.people["stranger"] = Person("http:2", "Sam")
    admitted = await users.resolve(message("dingtalk", "stranger"))
    assert admitted.user_id and not admitted.refused
    assert counts.outcomes[("http", "error")] == 2
    assert counts.outcomes[("http", "refused")] == 1


async def test_an_outage_creates_new_people_when_on_miss_is_create(
    store: Store, clock: FakeClock
) -> None:
    directory = Scripted()
    directory.down = True
    users = resolver(store, directory, clock, Counts())
    made = await users.resolve(message("zim", "new", name="Neo"))
    assert made.user_id == await store.resolve_user("zim", "", "new", "Neo")


async def test_someone_unknown_is_refused_or_made_a_user_of_their_own(
    store: Store, clock: FakeClock
) -> None:
    counts = Counts()
    refusing = resolver(store, Scripted(), clock, counts, on_miss=OnMiss.REFUSE)
    assert await refusing.resolve(message("feishu", "x")) == Resolution("", refused=True)
    creating = resolver(store, Scripted(), clock, counts)
    made = await creating.resolve(message("feishu", "x", name="Xi"))
    assert made == Resolution(await store.resolve_user("feishu", "", "x", "Xi"))
    assert counts.outcomes == {
        ("http", "miss"): 2,
        ("http", "refused"): 1,
        ("http", "created"): 1,
    }


async def test_a_blocked_user_is_known_after_a_refresh(store: Store, clock: FakeClock) -> None:
    users = UserResolver(
        store,
        None,
        clock=clock,
        observer=Counts(),
        blocked_users=functools.partial(blocked_user_ids, store),
        blocked_refresh=0.01,
    )
    await users.start()
    try:
        first = await users.resolve(message("dingtalk", "b1"))
        assert not first.blocked
        assert await store.set_blocked(first.user_id, True, now=clock()) is not None
        # the background refresh picks it up (another replica's block, or this one's)
        async with asyncio.timeout(5):
            while not (await users.resolve(message("dingtalk", "b1"))).blocked:
                await asyncio.sleep(0.01)
        assert await users.block_notice_due(first.user_id)
        assert not await users.block_notice_due(first.user_id)  # once a day
        clock.advance(timedelta(days=1, seconds=1))
        assert await users.block_notice_due(first.user_id)
    finally:
        await users.stop()


async def test_stop_closes_the_directory(store: Store, clock: FakeClock) -> None:
    directory = Scripted()
    users = resolver(store, directory, clock, Counts())
    await users.start()
    await users.stop()
    assert directory.closed


def test_config_names_what_the_chosen_mapper_needs() -> None:
    echo = {"agents": {"default": {"type": "echo"}}}
    assert validate(echo).users.mapper == "auto"
    with pytest.raises(ConfigurationError, match=r"needs users_file \(the TOML file"):
        validate({**echo, "users": {"mapper": "file"}})
    with pytest.raises(ConfigurationError, match=r"needs ldap_url .* and ldap_base_dn"):
        validate({**echo, "users": {"mapper": "ldap"}})
    with pytest.raises(ConfigurationError, match="must be https unless"):
        validate({**echo, "users": {"mapper": "http", "http_url": "http://hr.example.com/x"}})
    with pytest.raises(ConfigurationError, match=r"users\.on_miss"):
        validate({**echo, "users": {"on_miss": "ignore"}})
    loopback = validate({**echo, "users": {"mapper": "http", "http_url": "http://127.0.0.1:9/who"}})
    assert loopback.users.http_timeout == 5.0


def test_the_daemon_builds_the_directory_the_mapper_names(tmp_path: Path) -> None:
    echo = {"agents": {"default": {"type": "echo"}}}
    people = tmp_path / "users.toml"
    people.write_text(PEOPLE, encoding="utf-8")

    def built(users: dict[str, object]) -> object:
        return build_directory(validate({**echo, "users": users}).users)

    assert built({}) is None
    assert isinstance(built({"mapper": "file", "users_file": str(people)}), FileDirectory)
    assert isinstance(
        built({"mapper": "http", "http_url": "https://hr.example.com/who"}), HttpDirectory
    )
    ldap = built(
        {
            "mapper": "ldap",
            "ldap_url": "ldaps://ldap.example.com",
            "ldap_base_dn": "ou=people,dc=example,dc=com",
            "ldap_bind_password": "s3cret-pw",
        }
    )
    assert isinstance(ldap, LdapDirectory)
    people.write_text("[[users]]\nname = 1\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"users: .*users\.toml"):
        built({"mapper": "file", "users_file": str(people)})


async def test_a_voice_call_for_a_refused_or_blocked_person_is_403(
    store: Store, clock: FakeClock
) -> None:
    # the runtime's parts start_call reads before a cloud is asked: platform, ZEGO, idle reset
    runtime = SimpleNamespace(
        config=SimpleNamespace(
            type="dingtalk", voice=SimpleNamespace(zego=object()), idle_reset_minutes=60
        )
    )
    start = StartCall.model_validate(
        {"provider": "zego", "channel_id": "c1", "user_id": "u9", "zego": ZEGO_JOIN}
    )

    def calls(users: UserResolver) -> VoiceCalls:
        return VoiceCalls(
            store,
            lambda _channel: runtime,  # type: ignore[arg-type,return-value]  # a stand-in
            user_data_key=b"k" * 32,
            clock=clock,
            on_active=lambda _channel, _provider, _count: None,
            users=users,
        )

    refusing = resolver(store, Scripted(), clock, Counts(), on_miss=OnMiss.REFUSE)
    with pytest.raises(CallError) as refused:
        await calls(refusing).start_call(start)
    assert (refused.value.status, refused.value.code) == (403, "refused")
    # the caller chatted before, in their tenant: that user is the one blocked
    user_id = await store.resolve_user("dingtalk", "corp", "u9", "Uma")
    await store.set_blocked(user_id, True, now=clock())
    blocking = UserResolver(
        store,
        None,
        clock=clock,
        observer=Counts(),
        blocked_users=functools.partial(blocked_user_ids, store),
    )
    await blocking.refresh_blocked()
    with pytest.raises(CallError) as blocked:
        await calls(blocking).start_call(start)
    assert (blocked.value.status, blocked.value.code) == (403, "blocked")
    assert await store.voice_calls_active() == []  # no call was opened
    assert len(await store.list_users(search="u9", limit=5)) == 1  # nor another user made


def test_the_example_users_section_is_valid_once_uncommented(tmp_path: Path) -> None:
    example = (Path(__file__).resolve().parent.parent / "channeld.example.toml").read_text()
    start = example.index("# [users]\n")
    block = example[start : example.index("\n\n", start)]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    path = tmp_path / "channeld.toml"
    path.write_text(uncommented + "\n", encoding="utf-8")
    users = load(path, {"LDAP_BIND_PASSWORD": "pw"}).users
    assert users.mapper == "auto"
    assert users.ldap_filter == "(|(mail={email})(employeeNumber={employee_no}))"
    assert users.ldap_bind_password is not None
