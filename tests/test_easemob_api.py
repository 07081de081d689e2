"""The Easemob REST client against the emulator: the app token (asked for once, refreshed ahead
of expiry and once on a 401, never more), the bot user, sends, rewrites, and the classification
of every failure (docs/platforms/easemob.md §2, §3.2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels.easemob.api import EasemobApi
from channels.easemob.emulator import EasemobEmulatorThread
from channels.http import Answer
from common.errors import AuthError, PermanentError, RateLimited, TransientError
from tests.easemob_support import APP, BOT, CLIENT_ID, CLIENT_SECRET, ORG, started


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(emulator: EasemobEmulatorThread, **overrides: Any) -> EasemobApi:
    settings: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "api_base": emulator.url,
        "org_name": ORG,
        "app_name": APP,
        "bot_user": BOT,
        "timeout": 5.0,
    }
    return EasemobApi(**{**settings, **overrides})


@pytest.fixture
async def emulator() -> AsyncIterator[EasemobEmulatorThread]:
    async with started(None, rewrite=True) as emulator:
        yield emulator


@pytest.fixture
async def api(emulator: EasemobEmulatorThread) -> AsyncIterator[EasemobApi]:
    api = client(emulator)
    yield api
    await api.close()


async def granted(emulator: EasemobEmulatorThread) -> int:
    return sum(1 for t in await emulator.token_requests() if t.granted)


async def test_the_bot_user_is_created_once_and_an_existing_one_is_fine(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    assert await api.ensure_user(BOT) is True
    assert await api.ensure_user(BOT) is False
    assert BOT in await emulator.users()
    posts = [c for c in await emulator.calls() if c.method == "POST" and c.path.endswith("/users")]
    assert [c.status for c in posts] == [200, 400]
    assert posts[0].body[0]["username"] == BOT and posts[0].body[0]["password"]


async def test_one_token_serves_every_call(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    await api.ensure_user(BOT)
    await asyncio.gather(*(api.send_text(f"u{n}", f"hello {n}") for n in range(5)))
    assert await granted(emulator) == 1


async def test_a_text_goes_from_the_bot_user_and_its_id_comes_back(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    msg_id = await api.send_text("u1", "héllo 你好")
    stored = await emulator.message(msg_id)
    assert stored is not None
    assert (stored["from"], stored["to"], stored["body"]) == (
        BOT,
        "u1",
        {"type": "txt", "msg": "héllo 你好"},
    )


async def test_a_token_expired_mid_run_is_refreshed_once(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    await api.send_text("u1", "before")
    assert await emulator.expire_tokens() == 1
    # several calls at once find the token refused: one refresh serves them all
    await asyncio.gather(*(api.send_text(f"u{n}", "after") for n in range(4)))
    assert await granted(emulator) == 2
    refused = [c for c in await emulator.calls() if c.status == 401]
    assert 1 <= len(refused) <= 4


async def test_a_token_is_renewed_shortly_before_it_expires_without_a_refusal(
    emulator: EasemobEmulatorThread,
) -> None:
    clock = Clock()
    await emulator.call(lambda e: setattr(e.api, "token_ttl", 3600))
    api = client(emulator, clock=clock)
    try:
        await api.send_text("u1", "one")
        clock.now += 3600 - 601  # more than 10 minutes left: still good
        await api.send_text("u1", "two")
        assert await granted(emulator) == 1
        clock.now += 2  # under 10 minutes left
        await api.send_text("u1", "three")
        assert await granted(emulator) == 2
        assert [c for c in await emulator.calls() if c.status == 401] == []
    finally:
        await api.close()


async def test_a_token_refused_again_after_its_refresh_is_an_auth_error_without_a_third(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    await api.send_text("u1", "first")
    await emulator.add_fault(f"/{ORG}/{APP}/messages/users", 401, times=5)
    with pytest.raises(AuthError, match="401"):
        await api.send_text("u1", "refused")
    assert await granted(emulator) == 2  # one refresh, not one per refusal


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"client_secret": "YXA6wrong"}, "invalid client_secret"),
        ({"client_id": "YXA6nobody"}, "client_id does not exist"),
        ({"app_name": "otherapp"}, "organization_application_not_found"),
    ],
    ids=["secret", "client-id", "app"],
)
async def test_wrong_credentials_are_an_auth_error_that_names_the_cause(
    emulator: EasemobEmulatorThread, overrides: dict[str, Any], words: str
) -> None:
    api = client(emulator, **overrides)
    try:
        with pytest.raises(AuthError) as caught:
            await api.ensure_user(BOT)
    finally:
        await api.close()
    assert words in str(caught.value)
    assert "YXA6wrong" not in str(caught.value) and CLIENT_SECRET not in str(caught.value)


async def test_429_is_a_rate_limit_with_the_servers_wait(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    await emulator.add_fault(f"/{ORG}/{APP}/messages/users", 429, retry_after=2)
    with pytest.raises(RateLimited) as caught:
        await api.send_text("u1", "too fast")
    assert caught.value.retry_after == 2.0
    assert await api.send_text("u1", "later")  # the fault was used up


async def test_the_send_limit_of_a_minute_is_a_rate_limit_too(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    await emulator.add_fault(
        f"/{ORG}/{APP}/messages/users", 403, error="forbidden_op",
        description="message send reach limit",
    )  # fmt: skip
    with pytest.raises(RateLimited):
        await api.send_text("u1", "too many")


async def test_a_body_over_5000_bytes_is_refused_for_good(api: EasemobApi) -> None:
    with pytest.raises(PermanentError, match="14007"):
        await api.send_text("u1", "字" * 1667)  # 5,001 bytes
    assert await api.send_text("u1", "字" * 1666)  # 4,998 bytes


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_transient(
    emulator: EasemobEmulatorThread, api: EasemobApi, status: int
) -> None:
    await emulator.add_fault(f"/{ORG}/{APP}/messages/users", status)
    with pytest.raises(TransientError):
        await api.send_text("u1", "x")


async def test_a_rewrite_replaces_the_text_up_to_the_platforms_cap(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    msg_id = await api.send_text("u1", "a")
    for n in range(10):
        await api.rewrite(msg_id, "a" * (n + 2))
    stored = await emulator.message(msg_id)
    assert stored is not None and stored["body"]["msg"] == "a" * 11 and stored["edits"] == 10
    with pytest.raises(PermanentError, match="EditLimitExceeded"):
        await api.rewrite(msg_id, "too many")


async def test_a_rewrite_where_the_feature_is_off_is_refused_for_good(
    emulator: EasemobEmulatorThread, api: EasemobApi
) -> None:
    msg_id = await api.send_text("u1", "a")
    await emulator.set_rewrite(False)
    with pytest.raises(PermanentError, match="EditFeatureNotEnabled"):
        await api.rewrite(msg_id, "ab")
    assert await granted(emulator) == 1


def test_a_401_that_refuses_the_rewrite_not_the_token_asks_for_no_new_token() -> None:
    api = EasemobApi(
        client_id="c",
        client_secret="s",
        api_base="http://127.0.0.1:9",
        org_name="o",
        app_name="a",
        bot_user=BOT,
    )
    rewrite = {"error": "x", "exception": "RewriteMessageNotAuthorizedException"}
    stale = {"error": "unauthorized", "exception": "EasemobSecurityException"}
    assert not api._token_rejected(Answer(401, rewrite, {}))
    assert api._token_rejected(Answer(401, stale, {}))
    assert api._token_rejected(Answer(401, None, {}))
    assert isinstance(api._error("messages.rewrite", Answer(401, rewrite, {})), PermanentError)
