"""Enrich: the platform says who a new sender is (e-mail, mobile, employee number) before the
directory is asked; a missing permission is named once per channel, any other failure costs only
the details, for a while; an auto user is known by the platform's e-mail."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from channels.dingtalk.emulator import EmulatorThread
from channels.dingtalk.emulator.state import EmulatedUser
from channels.model import ChannelId, ChatType, InboundMessage, Sender, SenderProfile
from channels.provider import ProfileUnavailable
from channels.users.directory import Person, Who
from channels.users.profiles import ERROR_LOG_EVERY, SenderProfiles
from channels.users.resolver import RETRY_AFTER_ERROR, OnMiss, Resolution, UserResolver
from common.errors import AuthError, RateLimited
from daemon.app import Daemon
from daemon.config import validate
from storage import Store
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import dingtalk_emulator
from tests.e2e_support import FAST_BACKOFF
from tests.feishu_support import FeishuEmulatorThread, feishu_emulator
from tests.storage_support import FakeClock, sqlite_url
from tests.test_e2e_users import Both, card_text, config
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture", "feishu_emulator"]

START = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
ADA = SenderProfile(email="ada@example.com", mobile="+86-13800000000", employee_no="E-0042")
PERMISSION = "qyapi_get_member"


class Counts:
    """An observer that counts nothing it is not asked to."""

    def user_resolution(self, mapper: str, outcome: str) -> None:
        """Ignored."""

    def directory_latency(self, mapper: str, seconds: float) -> None:
        """Ignored."""


class ByEmail:
    """A directory that knows people by e-mail only, as an HR system keyed on addresses does."""

    source = "http"

    def __init__(self, *people: Person) -> None:
        self.people = {p.email: p for p in people}
        self.asked: list[Who] = []

    async def lookup(self, who: Who) -> Person | None:
        self.asked.append(who)
        return self.people.get(who.email)

    async def aclose(self) -> None:
        """Nothing to release."""


class Platform:
    """A stand-in for a provider's `sender_profile`: answers, refuses or fails as set."""

    def __init__(self, profile: SenderProfile = ADA) -> None:
        self.profile = profile
        self.failure: Exception | None = None
        self.asked = 0

    async def sender_profile(self) -> SenderProfile:
        self.asked += 1
        if self.failure is not None:
            raise self.failure
        return self.profile


def message(
    user_id: str = "staff-ada",
    *,
    platform: str = "dingtalk",
    channel: str = "dt",
    extra: dict[str, str] | None = None,
) -> InboundMessage:
    return InboundMessage(
        channel_id=ChannelId(channel),
        platform=platform,
        message_id=f"m-{user_id}",
        chat_id=f"chat-{user_id}",
        chat_type=ChatType.DIRECT,
        sender=Sender(platform_id=user_id, display_name="Ada", extra_ids=extra or {}),
        text="hello",
        received_at=START,
        tenant="corp",
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
    directory: ByEmail | None,
    clock: FakeClock,
    *,
    enrich: bool = True,
    on_miss: OnMiss = OnMiss.CREATE,
) -> UserResolver:
    return UserResolver(
        store,
        directory,
        on_miss=on_miss,
        cache_seconds=600,
        email_domain="im.invalid",
        clock=clock,
        observer=Counts(),
        enrich=enrich,
    )


ADA_PERSON = Person("http:ada", "Ada Lovelace", "ada@example.com", ("engineering",))


async def test_the_directory_is_asked_with_what_the_platform_says(
    store: Store, clock: FakeClock
) -> None:
    directory = ByEmail(ADA_PERSON)
    platform = Platform()
    users = resolver(store, directory, clock)
    found = await users.resolve(message(), platform.sender_profile)
    assert found.groups == ("engineering",)
    asked = directory.asked[0]
    assert (asked.email, asked.mobile, asked.employee_no) == (
        "ada@example.com",
        "+86-13800000000",
        "E-0042",
    )
    assert (asked.platform, asked.tenant, asked.user_id) == ("dingtalk", "corp", "staff-ada")
    user = await store.get_user(found.user_id)
    assert user is not None and user[0].email == "ada@example.com"


async def test_a_returning_sender_costs_no_platform_call_within_the_cache(
    store: Store, clock: FakeClock
) -> None:
    platform = Platform()
    users = resolver(store, ByEmail(ADA_PERSON), clock)
    first = await users.resolve(message(), platform.sender_profile)
    clock.advance(timedelta(seconds=599))
    assert await users.resolve(message(), platform.sender_profile) == first
    assert platform.asked == 1
    clock.advance(timedelta(seconds=2))  # both the person and the profile expired
    assert await users.resolve(message(), platform.sender_profile) == first
    assert platform.asked == 2


async def test_without_enrich_the_platform_is_never_asked(store: Store, clock: FakeClock) -> None:
    platform = Platform()
    directory = ByEmail(ADA_PERSON)
    users = resolver(store, directory, clock, enrich=False)
    found = await users.resolve(message(), platform.sender_profile)
    assert platform.asked == 0
    assert directory.asked[0].email == ""  # nobody matched: a user of their own
    assert found.groups == ()


async def test_what_a_webhook_message_carries_is_kept_where_the_platform_says_nothing(
    store: Store, clock: FakeClock
) -> None:
    directory = ByEmail(ADA_PERSON)
    platform = Platform(SenderProfile(employee_no="E-0042"))
    users = resolver(store, directory, clock)
    extra = {"email": "ada@example.com", "mobile": "+86-1"}
    found = await users.resolve(message(extra=extra), platform.sender_profile)
    assert found.groups == ("engineering",)
    asked = directory.asked[0]
    assert (asked.email, asked.mobile, asked.employee_no) == ("ada@example.com", "+86-1", "E-0042")


async def test_a_missing_permission_is_named_once_per_channel_and_leaves_the_fields_empty(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    directory = ByEmail(ADA_PERSON)
    platform = Platform()
    platform.failure = ProfileUnavailable("errcode 60011: no permission", PERMISSION)
    users = resolver(store, directory, clock, on_miss=OnMiss.REFUSE)
    with caplog.at_level(logging.WARNING, logger="channels.users"):
        refused = await users.resolve(message("staff-1"), platform.sender_profile)
        await users.resolve(message("staff-2"), platform.sender_profile)
        await users.resolve(message("staff-3", channel="dt-2"), platform.sender_profile)
    assert refused == Resolution("", refused=True)  # the directory matched nobody
    assert [w.email for w in directory.asked] == ["", "", ""]
    named = [r.getMessage() for r in caplog.records if PERMISSION in r.getMessage()]
    assert len(named) == 2  # channel dt once, channel dt-2 once
    assert "channel dt:" in named[0] and "channel dt-2:" in named[1]
    # a permission does not appear by itself: the same sender is not asked again meanwhile
    clock.advance(timedelta(seconds=300))
    await users.resolve(message("staff-1"), platform.sender_profile)
    assert platform.asked == 3


async def test_a_failed_ask_leaves_the_fields_empty_for_a_while_then_asks_again(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    directory = ByEmail(ADA_PERSON)
    platform = Platform()
    platform.failure = RateLimited("user/get: 429", retry_after=1)
    users = resolver(store, directory, clock)
    with caplog.at_level(logging.WARNING, logger="channels.users"):
        alone = await users.resolve(message(), platform.sender_profile)
        await users.resolve(message("staff-bo"), platform.sender_profile)
    assert alone.groups == ()  # answered anyway, as a user of their own
    logged = [r.getMessage() for r in caplog.records if "could not say" in r.getMessage()]
    assert logged == ["channel dt: the platform could not say who a sender is: user/get: 429"]
    # not the whole cache_seconds: the person is asked about again once the pause is over
    clock.advance(RETRY_AFTER_ERROR - timedelta(seconds=1))
    await users.resolve(message(), platform.sender_profile)
    assert platform.asked == 2
    platform.failure = None
    clock.advance(timedelta(seconds=2))
    found = await users.resolve(message(), platform.sender_profile)
    assert found.groups == ("engineering",)
    assert platform.asked == 3
    # the directory's person took over the identity the failed round made a user of its own
    owner = await store.identity_owner("dingtalk", "corp", "staff-ada")
    assert owner is not None and owner.id == found.user_id


async def test_failures_are_logged_at_most_every_few_minutes_without_their_text(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    profiles = SenderProfiles(
        clock=clock, keep=timedelta(hours=1), retry_after_error=RETRY_AFTER_ERROR
    )

    async def leaky() -> SenderProfile:
        raise ValueError("GET https://oapi.example/user/get?access_token=SECRET-TOKEN")

    who = Who("dingtalk", "corp", "staff-1")
    with caplog.at_level(logging.WARNING, logger="channels.users"):
        for _ in range(3):
            enriched, complete = await profiles.enrich(ChannelId("dt"), who, leaky)
            assert (enriched, complete) == (who, False)
            clock.advance(RETRY_AFTER_ERROR)
        clock.advance(ERROR_LOG_EVERY)
        await profiles.enrich(ChannelId("dt"), who, leaky)
    logged = [r.getMessage() for r in caplog.records]
    assert logged == ["channel dt: the platform could not say who a sender is: ValueError"] * 2
    assert "SECRET" not in caplog.text


async def test_an_ask_that_hangs_is_cut_at_the_timeout(clock: FakeClock) -> None:
    profiles = SenderProfiles(
        clock=clock, keep=timedelta(hours=1), retry_after_error=RETRY_AFTER_ERROR, timeout=0.05
    )
    never = asyncio.Event()

    async def hangs() -> SenderProfile:
        await never.wait()
        return ADA

    who = Who("feishu", "t1", "ou_1")
    async with asyncio.timeout(5):
        assert await profiles.enrich(ChannelId("fs"), who, hangs) == (who, False)


async def test_auth_errors_are_failures_not_a_missing_permission(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    profiles = SenderProfiles(
        clock=clock, keep=timedelta(hours=1), retry_after_error=RETRY_AFTER_ERROR
    )

    async def rejected() -> SenderProfile:
        raise AuthError("tenant token rejected (99991663)")

    who = Who("feishu", "t1", "ou_1")
    with caplog.at_level(logging.WARNING, logger="channels.users"):
        assert await profiles.enrich(ChannelId("fs"), who, rejected) == (who, False)
    assert "tenant token rejected (99991663)" in caplog.text


async def test_auto_users_are_known_by_the_platform_email(store: Store, clock: FakeClock) -> None:
    platform = Platform()
    users = resolver(store, None, clock)
    made = await users.resolve(message(), platform.sender_profile)
    again = await users.resolve(message(), platform.sender_profile)
    assert made == again
    assert platform.asked == 1  # once labelled, the identity needs no profile
    nobody = Platform(SenderProfile())
    other = await users.resolve(message("staff-2"), nobody.sender_profile)
    await users.write_seen()
    labelled = await store.get_user(made.user_id)
    plain = await store.get_user(other.user_id)
    assert labelled is not None and plain is not None
    assert (labelled[0].email, labelled[0].auth_source) == ("ada@example.com", "dingtalk")
    assert plain[0].email == "dingtalk-staff-2@im.invalid"


async def test_an_auto_user_waits_for_its_label_while_the_platform_fails(
    store: Store, clock: FakeClock
) -> None:
    platform = Platform()
    platform.failure = RateLimited("429")
    users = resolver(store, None, clock)
    made = await users.resolve(message(), platform.sender_profile)
    await users.write_seen()
    unlabelled = await store.get_user(made.user_id)
    assert unlabelled is not None and unlabelled[0].email is None
    platform.failure = None
    clock.advance(RETRY_AFTER_ERROR)
    await users.resolve(message(), platform.sender_profile)
    await users.write_seen()
    labelled = await store.get_user(made.user_id)
    assert labelled is not None and labelled[0].email == "ada@example.com"


async def test_without_enrich_an_auto_user_keeps_the_label_whatever_the_message_carries(
    store: Store, clock: FakeClock
) -> None:
    users = resolver(store, None, clock, enrich=False)
    made = await users.resolve(message(extra={"email": "ada@example.com"}))
    await users.write_seen()
    found = await store.get_user(made.user_id)
    assert found is not None and found[0].email == "dingtalk-staff-ada@im.invalid"


# -- end to end: one daemon, DingTalk and Feishu on their emulators, an HR lookup by e-mail ------


class HrByEmail:
    """An organisation's lookup service on loopback that knows people by e-mail alone (a user id
    of one platform means nothing to it): the same person on two platforms is one entry."""

    def __init__(self) -> None:
        self.people = {
            "ada@example.com": {
                "id": "hr-7",
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "groups": ["engineering"],
            }
        }
        self.requests: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/im-lookup", self._lookup)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/im-lookup"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _lookup(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        person = self.people.get(self.requests[-1]["email"])
        if person is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"user": person})

    def asked(self, platform: str) -> list[tuple[str, str, str, str]]:
        """(user id, e-mail, mobile, employee number) of each lookup for `platform`."""
        return [
            (r["user_id"], r["email"], r["mobile"], r["employee_no"])
            for r in self.requests
            if r["platform"] == platform
        ]


@pytest.fixture
async def hr() -> AsyncIterator[HrByEmail]:
    server = HrByEmail()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def enriched(
    tmp_path: Path,
    hr: HrByEmail,
    dingtalk_emulator: EmulatorThread,
    feishu_emulator: FeishuEmulatorThread,
    fake_llm: FakeLLM,
) -> AsyncIterator[Both]:
    """The daemon with an HTTP directory matching by e-mail and enrich on."""
    users = {"mapper": "http", "http_url": hr.url, "enrich": True}
    raw = config(dingtalk_emulator, feishu_emulator, fake_llm, tmp_path, users)
    raw["channels"][0]["oapi_base"] = dingtalk_emulator.url  # one port serves both hosts
    daemon = Daemon(validate(raw), backoff=FAST_BACKOFF)
    await daemon.start()
    running = Both(daemon, dingtalk_emulator, feishu_emulator)
    try:
        await running.connected()
        yield running
    finally:
        await daemon.stop()


async def test_the_same_email_on_dingtalk_and_feishu_is_one_person(
    enriched: Both,
    hr: HrByEmail,
    dingtalk_emulator: EmulatorThread,
    feishu_emulator: FeishuEmulatorThread,
) -> None:
    await dingtalk_emulator.add_user(
        EmulatedUser("staff-ada", "Ada", "ada@example.com", "13800000001", "E-0042")
    )
    await feishu_emulator.add_contact_user(
        "ou_ada", email="ada@example.com", mobile="+8613800000001", employee_no="E-0042"
    )
    assert card_text(await enriched.on_dingtalk("staff-ada", "from dingtalk")).endswith(
        "from dingtalk"
    )
    assert card_text(await enriched.on_feishu("ou_ada", "from feishu")).endswith("from feishu")
    # the directory was asked with what each platform said, not with what the messages carried
    assert hr.asked("dingtalk") == [("staff-ada", "ada@example.com", "13800000001", "E-0042")]
    assert hr.asked("feishu") == [("ou_ada", "ada@example.com", "+8613800000001", "E-0042")]
    [ada] = await enriched.store.list_users(search="ada@example.com", limit=10)
    assert (ada.display_name, ada.groups, ada.auth_source) == (
        "Ada Lovelace",
        ("engineering",),
        "http",
    )
    shown = await enriched.store.get_user(ada.id)
    assert shown is not None
    assert sorted((i.platform, i.platform_user_id) for i in shown[1]) == [
        ("dingtalk", "staff-ada"),
        ("feishu", "ou_ada"),
    ]
    assert enriched.resolutions("http", "hit") == 2
    # a returning sender costs neither a platform call nor a lookup within cache_seconds
    await enriched.on_dingtalk("staff-ada", "again")
    assert len(hr.requests) == 2


async def test_without_the_permission_the_fields_are_empty_and_the_log_names_it_once(
    enriched: Both,
    hr: HrByEmail,
    dingtalk_emulator: EmulatorThread,
    feishu_emulator: FeishuEmulatorThread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await dingtalk_emulator.set_profile_access("none")
    await feishu_emulator.deny_contact("scope")
    with caplog.at_level(logging.WARNING, logger="channels.users"):
        for staff in ("staff-ada", "staff-bob"):
            assert card_text(await enriched.on_dingtalk(staff, "hi")).endswith("hi")
        for open_id in ("ou_ada", "ou_bob"):
            assert card_text(await enriched.on_feishu(open_id, "hi")).endswith("hi")
    # answered all the same, each as a user of their own: the directory got no e-mail to match
    assert [r["email"] for r in hr.requests] == ["", "", "", ""]
    assert enriched.resolutions("http", "created") == 4
    named = [r.getMessage() for r in caplog.records if "grant the app" in r.getMessage()]
    assert len(named) == 2, named
    dingtalk_line, feishu_line = sorted(named)
    assert dingtalk_line.startswith("channel dt: grant the app qyapi_get_member")
    assert feishu_line.startswith("channel fs: grant the app contact:contact.base:readonly")
    assert dingtalk_line.count("grant the app") == 1  # said once, however the platform put it
