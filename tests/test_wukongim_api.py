"""`WuKongIMApi` against the WuKongIM emulator (and, for the documented flat answer, a loopback
server of its own): the token, the version probe, sends and events, and how every failure is
classified (docs/platforms/wukongim.md §2)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from channels.wukongim.api import WuKongIMApi, parse_version
from channels.wukongim.emulator import WuKongIMEmulatorThread
from common.errors import AuthError, PermanentError, RateLimited, TransientError
from tests.wukongim_support import BOT, started

TOKEN = "manager-token-4f2a9c"


@pytest.fixture
async def emulator() -> AsyncIterator[WuKongIMEmulatorThread]:
    async with started(None, token=TOKEN) as emulator:
        yield emulator


def client(emulator: WuKongIMEmulatorThread, token: str = TOKEN, **options: Any) -> WuKongIMApi:
    return WuKongIMApi(token=token, api_base=emulator.url, bot_uid=BOT, **options)


async def test_varz_with_the_managers_token_tells_the_version(
    emulator: WuKongIMEmulatorThread,
) -> None:
    api = client(emulator)
    try:
        assert await api.varz() == "v2.2.5-20260422"
    finally:
        await api.close()


@pytest.mark.parametrize(
    ("token", "says"),
    [("not-the-token", "refused the token"), ("", "requires a token")],
    ids=["wrong", "missing"],
)
async def test_a_refused_token_is_an_auth_error_that_says_what_to_fix(
    emulator: WuKongIMEmulatorThread, token: str, says: str
) -> None:
    api = client(emulator, token=token)
    try:
        with pytest.raises(AuthError) as caught:
            await api.varz()
    finally:
        await api.close()
    text = str(caught.value)
    assert "HTTP 401" in text and says in text and "managerToken" in text
    assert TOKEN not in text
    assert token == "" or token not in text


async def test_a_server_without_a_token_takes_calls_without_one() -> None:
    async with started(None) as emulator:
        api = client(emulator, token="")
        try:
            assert await api.varz()
        finally:
            await api.close()


@pytest.mark.parametrize(
    ("version", "parsed"),
    [
        ("v2.2.5-20260422", (2, 2, 5)),
        ("v2.2.4-20260313", (2, 2, 4)),
        ("2.1.5", (2, 1, 5)),
        ("v2.2", (2, 2, 0)),
        ("", None),
        ("dev", None),
    ],
)
def test_versions_are_read_as_numbers(version: str, parsed: tuple[int, int, int] | None) -> None:
    assert parse_version(version) == parsed


async def test_a_message_is_sent_as_the_bot_with_our_number(
    emulator: WuKongIMEmulatorThread,
) -> None:
    api = client(emulator)
    try:
        sent = await api.send_message("u1", 1, "héllo", "our-number-1")
    finally:
        await api.close()
    assert sent.client_msg_no == "our-number-1"
    assert int(sent.message_id) > 2**53  # the server's snowflake, kept exact
    (call,) = await emulator.calls("/message/send")
    body = call.body
    assert (body["from_uid"], body["channel_id"], body["channel_type"]) == (BOT, "u1", 1)
    assert body["is_stream"] == 0
    assert json.loads(base64.b64decode(body["payload"])) == {"type": 1, "content": "héllo"}


async def test_a_refused_request_is_permanent_and_keeps_the_servers_message(
    emulator: WuKongIMEmulatorThread,
) -> None:
    api = client(emulator)
    try:
        with pytest.raises(PermanentError, match=r"HTTP 400: 频道ID不合法"):
            await api.send_message("a@b", 2, "hi", "n-1")  # WuKongIM refuses @ in channel ids
    finally:
        await api.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
        (408, TransientError),
        (403, AuthError),
        (404, PermanentError),
        (409, PermanentError),
    ],
)
async def test_failures_are_classified_by_status(
    emulator: WuKongIMEmulatorThread, status: int, error: type[Exception]
) -> None:
    await emulator.add_fault("/message/send", status, msg="injected")
    api = client(emulator)
    try:
        with pytest.raises(error) as caught:
            await api.send_message("u1", 1, "hi", "n-1")
    finally:
        await api.close()
    assert type(caught.value) is error
    assert f"HTTP {status}" in str(caught.value)


async def test_a_rate_limit_carries_the_servers_wait(emulator: WuKongIMEmulatorThread) -> None:
    await emulator.add_fault("/message/event", 429, msg="slow down", retry_after=7)
    api = client(emulator)
    try:
        with pytest.raises(RateLimited) as caught:
            await api.send_event("u1", 1, "n-1", "n-1:0-2", "stream.delta", event_key="main")
    finally:
        await api.close()
    assert caught.value.retry_after == 7


async def test_no_answer_in_time_is_transient(emulator: WuKongIMEmulatorThread) -> None:
    await emulator.add_fault("/varz", None, delay=2.0)
    api = client(emulator, timeout=0.2)
    try:
        with pytest.raises(TransientError, match=r"no answer within 0\.2s"):
            await api.varz()
    finally:
        await api.close()


async def test_an_unreachable_server_is_transient() -> None:
    async with started(None) as emulator:
        url = emulator.url
    api = WuKongIMApi(token="", api_base=url, bot_uid=BOT)
    try:
        with pytest.raises(TransientError):
            await api.varz()
    finally:
        await api.close()


async def test_a_server_before_v2_2_4_has_no_event_api() -> None:
    async with started(None, version="v2.2.3-20260128") as emulator:
        api = client(emulator, token="")
        try:
            with pytest.raises(PermanentError, match="HTTP 404"):
                await api.send_event("u1", 1, "n-1", "n-1:0-2", "stream.delta", event_key="main")
        finally:
            await api.close()


async def test_events_and_their_stored_state(emulator: WuKongIMEmulatorThread) -> None:
    api = client(emulator)
    try:
        await api.send_message("u1", 1, "…", "s-1", stream=True)
        delta = {"kind": "text", "delta": "hi"}
        await api.send_event(
            "u1", 1, "s-1", "s-1:0-2", "stream.delta", event_key="main", payload=delta
        )
        assert await api.event_sync("u1", 1, "s-1") == []  # deltas are never stored
        await api.send_event("u1", 1, "s-1", "s-1:close", "stream.close", event_key="main")
        await api.send_event("u1", 1, "s-1", "s-1:finish", "stream.finish")
        stored = await api.event_sync("u1", 1, "s-1")
    finally:
        await api.close()
    assert {(e["event_key"], e["event_type"]) for e in stored} == {
        ("main", "stream.close"),
        ("__finish__", "stream.finish"),
    }


async def test_the_documented_flat_answer_of_a_send_is_read_too() -> None:
    async def flat(_request: web.Request) -> web.Response:
        return web.json_response(
            {"message_id": 1834567890123456789, "message_seq": 3, "client_msg_no": "n-9"}
        )

    app = web.Application()
    app.router.add_post("/message/send", flat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api = WuKongIMApi(token="", api_base=f"http://127.0.0.1:{runner.addresses[0][1]}", bot_uid=BOT)
    try:
        sent = await api.send_message("u1", 1, "hi", "n-9")
    finally:
        await api.close()
        await runner.cleanup()
    assert (sent.message_id, sent.client_msg_no) == ("1834567890123456789", "n-9")
