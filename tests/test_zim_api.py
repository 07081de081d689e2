"""The ZIM server API client against the emulator: signed calls, robot registration in both of
ZIM's "already exists" forms, sends and edits, the classification of failures, and the app-wide
request budget (docs/platforms/zim.md §2)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels.zim.api import ZimApi
from channels.zim.emulator import ZimEmulatorThread
from common.errors import AuthError, ChannelError, PermanentError, RateLimited, TransientError
from tests.zim_support import APP_ID, ROBOT, SECRET, USER, started


@pytest.fixture
async def emulator() -> AsyncIterator[ZimEmulatorThread]:
    async with started(None) as emulator:
        yield emulator


def client(
    emulator: ZimEmulatorThread, secret: str = SECRET, app_id: int = int(APP_ID), **options: Any
) -> ZimApi:
    return ZimApi(
        app_id=app_id,
        server_secret=secret,
        api_base=emulator.url,
        robot_id=ROBOT,
        timeout=3.0,
        **options,
    )


async def test_the_robot_is_registered_once_then_exists(emulator: ZimEmulatorThread) -> None:
    api = client(emulator)
    try:
        assert await api.register_robot("Assistant", "") is True
        assert await api.register_robot("Assistant", "") is False  # Code 0 + ErrorList entry
    finally:
        await api.close()
    (robot,) = await emulator.robots()
    assert (robot.robot_id, robot.registered, robot.name) == (ROBOT, True, "Assistant")
    calls = await emulator.calls()
    assert [c.action for c in calls] == ["RobotRegister", "RobotRegister"]
    nonces = [c.query["SignatureNonce"] for c in calls]
    assert all(re.fullmatch(r"[0-9a-f]{16}", n) for n in nonces)
    assert len(set(nonces)) == len(nonces)


async def test_already_exists_as_a_non_zero_code_is_accepted_too() -> None:
    async with started(None, exists_form="code", registered=True) as emulator:
        api = client(emulator)
        try:
            assert await api.register_robot("Assistant", "https://example.invalid/a.png") is False
        finally:
            await api.close()
        (call,) = await emulator.calls()
        assert call.code == 660700002  # the whole call failed with it


@pytest.mark.parametrize(
    ("options", "code"),
    [({"secret": "f" * 32}, "100000005"), ({"app_id": 42}, "100000010")],
)
async def test_wrong_credentials_are_an_auth_error_saying_what_to_check(
    emulator: ZimEmulatorThread, options: dict[str, Any], code: str
) -> None:
    api = client(emulator, **options)
    try:
        with pytest.raises(AuthError) as caught:
            await api.register_robot("Assistant", "")
    finally:
        await api.close()
    text = str(caught.value)
    assert f"Code {code}" in text and "check app_id and server_secret" in text
    assert SECRET not in text and "f" * 32 not in text


async def test_a_reply_is_sent_then_edited_by_its_msg_seq(emulator: ZimEmulatorThread) -> None:
    api = client(emulator)
    try:
        await api.register_robot("Assistant", "")
        await emulator.send_user_message(ROBOT, from_user_id=USER, text="hi")
        sent = await api.send_peer(USER, "Hel")
        await api.edit_peer(USER, sent.msg_seq, "Hello, 世界")
    finally:
        await api.close()
    message = await emulator.message(sent.msg_id)
    assert message is not None
    assert (message.sender, message.receiver, message.msg_seq) == (ROBOT, USER, sent.msg_seq)
    assert message.texts == ["Hel", "Hello, 世界"]


@pytest.mark.parametrize(
    ("fault", "error", "says"),
    [
        ({"code": 660400001, "message": "message too large"}, PermanentError, "Code 660400001"),
        ({"code": 661000001, "message": "editable time exceeded"}, PermanentError, "661000001"),
        ({"code": 7, "message": "rate"}, RateLimited, "Code 7"),
        ({"code": 660700001, "message": "over 20/s"}, RateLimited, "660700001"),
        ({"code": 1, "message": "busy"}, TransientError, "Code 1: busy"),
        ({"code": 660500002}, PermanentError, "660500002"),
        ({"status": 503}, TransientError, "HTTP 503"),
        ({"status": 403}, AuthError, "HTTP 403"),
    ],
)
async def test_failures_are_classified_with_the_code_in_the_message(
    emulator: ZimEmulatorThread, fault: dict[str, Any], error: type[ChannelError], says: str
) -> None:
    await emulator.add_fault("/", action="SendPeerMessage", **fault)
    api = client(emulator)
    try:
        await api.register_robot("Assistant", "")
        with pytest.raises(ChannelError) as caught:
            await api.send_peer(USER, "hello")
    finally:
        await api.close()
    assert type(caught.value) is error
    assert says in str(caught.value)


async def test_a_rate_refusal_slows_the_whole_app_down(emulator: ZimEmulatorThread) -> None:
    await emulator.add_fault("/", action="SendPeerMessage", code=7, message="rate")
    api = client(emulator)
    try:
        await api.register_robot("Assistant", "")
        rate = api.bucket.rate
        with pytest.raises(RateLimited):
            await api.send_peer(USER, "hello")
        assert api.bucket.rate < rate
    finally:
        await api.close()


async def _burst(emulator: ZimEmulatorThread, rate: float, count: int) -> int:
    """Sends `count` messages at once through one client; the refusals the emulator recorded."""
    api = client(emulator, requests_per_second=rate)
    try:
        await api.register_robot("Assistant", "")
        results = await asyncio.gather(
            *(api.send_peer(USER, f"n{i}") for i in range(count)), return_exceptions=True
        )
    finally:
        await api.close()
    assert all(not isinstance(r, BaseException) or isinstance(r, RateLimited) for r in results)
    return len(await emulator.refusals())


async def test_every_call_of_the_app_stays_within_zims_sliding_second(
    emulator: ZimEmulatorThread,
) -> None:
    assert await _burst(emulator, rate=15, count=24) == 0


async def test_without_the_budget_the_same_burst_is_refused() -> None:
    # the check above can fail: the emulator refuses what goes over 20 in a second
    async with started(None) as emulator:
        assert await _burst(emulator, rate=1000, count=24) > 0
