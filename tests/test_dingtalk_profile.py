"""A sender's profile from DingTalk's contacts API (`topapi/v2/user/get` on the oapi host): the
real `DingTalkApi` and `DingTalkProvider` against the emulator, served on the test's own loop."""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pydantic
import pytest

from channels.config import sends_secrets
from channels.dingtalk.api import PROFILE_PERMISSION, PROFILE_RANGE, DingTalkApi
from channels.dingtalk.config import DEFAULT_OAPI_BASE, DingTalkChannelConfig
from channels.dingtalk.emulator import DingTalkEmulator, EmulatorThread
from channels.dingtalk.emulator.cli import add_arguments
from channels.dingtalk.emulator.state import EmulatedUser
from channels.dingtalk.provider import DingTalkProvider
from channels.model import ChannelId, ChatType, InboundMessage, Sender, SenderProfile
from channels.provider import ProfileUnavailable
from common.errors import PermanentError, RateLimited, TransientError

ID = "ding-profile"
SECRET = "secret-profile-8d1e4a"  # distinctive, so a leak into a message is detectable
USER_PATH = "/topapi/v2/user/get"
TOKEN_PATH = "/v1.0/oauth2/accessToken"
ALICE = EmulatedUser("alice", "Alice", "alice@corp.example", "13800000001", "E1001")


@pytest.fixture
async def emulator() -> AsyncIterator[DingTalkEmulator]:
    emu = DingTalkEmulator([(ID, SECRET)], ping_interval=None)
    await emu.start()
    emu.add_user(ALICE)
    yield emu
    await emu.stop()


@pytest.fixture
async def api(emulator: DingTalkEmulator) -> AsyncIterator[DingTalkApi]:
    client = DingTalkApi(
        client_id=ID,
        client_secret=SECRET,
        api_base=emulator.url,
        oapi_base=emulator.url,
        robot_code=ID,
        timeout=2.0,
    )
    yield client
    await client.close()


def _message(staff_id: str, sender_id: str = "$:LWCP_v1:$abc") -> InboundMessage:
    extra = {"sender_id": sender_id, **({"staff_id": staff_id} if staff_id else {})}
    return InboundMessage(
        channel_id=ChannelId("dt"),
        platform="dingtalk",
        message_id="msg-1",
        chat_id="cid1==",
        chat_type=ChatType.DIRECT,
        sender=Sender(platform_id=staff_id or sender_id, display_name="A", extra_ids=extra),
        text="hi",
        received_at=datetime.now(UTC),
    )


# -- the API client -----------------------------------------------------------------------------


async def test_profile_is_read_with_the_token_in_the_query_string(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    profile = await api.user_profile("alice")
    assert profile == SenderProfile("alice@corp.example", "13800000001", "E1001")
    (call,) = emulator.calls(USER_PATH)
    assert call.body == {"userid": "alice", "language": "zh_CN"}
    assert call.client_id == ID  # the emulator knew the app by the token it was given
    assert call.query == {"access_token": "***"}  # the record never keeps the token


async def test_a_sender_the_emulator_saw_gets_made_up_details(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    await emulator.send_user_message(ID, text="hello", sender_staff_id="staff-7")
    profile = await api.user_profile("staff-7")
    assert profile.email == "staff-7@example.com"
    assert profile.mobile.startswith("138")
    assert len(profile.mobile) == 11
    assert profile.employee_no.startswith("E")
    assert profile == await api.user_profile("staff-7")  # the same on every call


async def test_token_is_fetched_once_and_reused_across_both_hosts(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    await api.user_profile("alice")
    await api.user_profile("alice")
    await api.access_token()  # what the api.dingtalk.com calls send in their header
    assert len(emulator.calls(TOKEN_PATH)) == 1
    assert len(emulator.calls(USER_PATH)) == 2


async def test_a_refused_token_is_refreshed_and_the_call_made_again_once(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    await api.user_profile("alice")
    emulator.expire_tokens()
    profile = await api.user_profile("alice")
    assert profile.email == "alice@corp.example"
    assert len(emulator.calls(TOKEN_PATH)) == 2
    assert len(emulator.calls(USER_PATH)) == 3  # the refused one, and one again with a new token


async def test_permission_denied_names_the_permission_to_grant(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    emulator.set_profile_access("none")
    with pytest.raises(ProfileUnavailable) as caught:
        await api.user_profile("alice")
    assert caught.value.permission == PROFILE_PERMISSION
    assert "qyapi_get_member" in caught.value.permission
    assert "60011" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert await api.access_token() not in str(caught.value)
    assert len(emulator.calls(USER_PATH)) == 1  # a missing permission is not a stale token


async def test_a_member_outside_the_apps_range_names_the_range_to_widen(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    emulator.add_fault(USER_PATH, 200, body={"errcode": 50002, "errmsg": "企业员工不在授权范围"})
    with pytest.raises(ProfileUnavailable) as caught:
        await api.user_profile("alice")
    assert caught.value.permission == PROFILE_RANGE
    assert "授权范围" in caught.value.permission


async def test_without_the_contact_field_permissions_email_and_mobile_are_empty(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    emulator.set_profile_access("basic")
    assert await api.user_profile("alice") == SenderProfile("", "", "E1001")


async def test_the_organisation_mailbox_stands_in_for_a_missing_email(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    body = {"errcode": 0, "errmsg": "ok", "result": {"org_email": "a@mail.corp", "email": ""}}
    emulator.add_fault(USER_PATH, 200, body=body)
    assert await api.user_profile("alice") == SenderProfile(email="a@mail.corp")


async def test_unknown_member_is_a_permanent_error(api: DingTalkApi) -> None:
    with pytest.raises(PermanentError, match="60121"):
        await api.user_profile("nobody")


async def test_throttled_answer_is_rate_limited(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    body = {
        "errcode": 90002,
        "errmsg": "您的服务器调用钉钉开放平台当前接口的所有请求都被暂时禁用了",
    }
    emulator.add_fault(USER_PATH, 200, body=body)
    with pytest.raises(RateLimited):
        await api.user_profile("alice")


async def test_system_busy_and_server_errors_are_transient(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    emulator.add_fault(USER_PATH, 200, body={"errcode": -1, "errmsg": "系统繁忙"})
    with pytest.raises(TransientError, match="errcode -1"):
        await api.user_profile("alice")
    emulator.add_fault(USER_PATH, 503)
    with pytest.raises(TransientError, match="HTTP 503"):
        await api.user_profile("alice")


async def test_a_stalled_answer_ends_at_the_client_timeout(emulator: DingTalkEmulator) -> None:
    client = DingTalkApi(
        client_id=ID,
        client_secret=SECRET,
        api_base=emulator.url,
        oapi_base=emulator.url,
        robot_code=ID,
        timeout=0.3,
    )
    try:
        await client.access_token()
        emulator.add_fault(USER_PATH, None, latency=5.0)
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"no answer within 0\.3s"):
            await client.user_profile("alice")
        assert time.monotonic() - started < 2.0
    finally:
        await client.close()


# -- the provider ---------------------------------------------------------------------------------


async def _discard(message: InboundMessage) -> None:
    raise AssertionError("no message is expected")


def _provider(emulator: DingTalkEmulator) -> DingTalkProvider:
    config = DingTalkChannelConfig(
        id="dt",
        client_id=ID,
        client_secret=pydantic.SecretStr(SECRET),
        api_base=emulator.url,
        oapi_base=emulator.url,
    )
    return DingTalkProvider(config, _discard)


async def test_provider_asks_by_the_senders_staff_id(emulator: DingTalkEmulator) -> None:
    provider = _provider(emulator)
    try:
        profile = await provider.sender_profile(_message("alice"))
        assert profile.email == "alice@corp.example"
        # someone outside the organisation has no staff id: nothing is asked
        assert await provider.sender_profile(_message("")) == SenderProfile()
        assert len(emulator.calls(USER_PATH)) == 1
    finally:
        await provider.close()


async def test_provider_closed_refuses_the_profile(emulator: DingTalkEmulator) -> None:
    provider = _provider(emulator)
    await provider.close()
    with pytest.raises(PermanentError, match="client closed"):
        await provider.sender_profile(_message("alice"))
    assert emulator.calls(USER_PATH) == []


# -- configuration and the emulator's switches ----------------------------------------------------


def test_oapi_base_defaults_to_dingtalk_and_is_https_unless_loopback() -> None:
    base = {"id": "dt", "client_id": ID, "client_secret": SECRET}
    assert DingTalkChannelConfig.model_validate(base).oapi_base == DEFAULT_OAPI_BASE
    local = DingTalkChannelConfig.model_validate({**base, "oapi_base": "http://127.0.0.1:9/"})
    assert local.oapi_base == "http://127.0.0.1:9"
    with pytest.raises(pydantic.ValidationError, match="https"):
        DingTalkChannelConfig.model_validate({**base, "oapi_base": "http://oapi.example.com"})
    assert "oapi_base" in sends_secrets(DingTalkChannelConfig)


async def test_control_plane_sets_members_and_denies_access(
    api: DingTalkApi, emulator: DingTalkEmulator
) -> None:
    control = emulator.url + "/_emulator/users"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        member = {"staff_id": "bob", "name": "Bob", "email": "bob@corp.example"}
        async with http.post(control, json=member) as resp:
            assert resp.status == 200
            listed = await resp.json()
        assert {"staff_id": "bob", "email": "bob@corp.example"}.items() <= next(
            u for u in listed["users"] if u["staff_id"] == "bob"
        ).items()
        assert (await api.user_profile("bob")).email == "bob@corp.example"
        async with http.post(control + "/access", json={"access": "none"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["access"] == "none"
        with pytest.raises(ProfileUnavailable):
            await api.user_profile("bob")
        async with http.post(control + "/access", json={"access": "some"}) as resp:
            assert resp.status == 400
        async with http.get(control) as resp:
            assert (await resp.json())["access"] == "none"


def test_cli_option_sets_the_profile_access() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).profile_access == "full"
    assert parser.parse_args(["--profile-access", "none"]).profile_access == "none"
    with pytest.raises(SystemExit):
        parser.parse_args(["--profile-access", "some"])


async def test_threaded_emulator_takes_members_and_the_access_switch() -> None:
    async with EmulatorThread([(ID, SECRET)], ping_interval=None, profile_access="basic") as emu:
        client = DingTalkApi(
            client_id=ID,
            client_secret=SECRET,
            api_base=emu.url,
            oapi_base=emu.url,
            robot_code=ID,
            timeout=2.0,
        )
        try:
            await emu.add_user(ALICE)
            assert await client.user_profile("alice") == SenderProfile("", "", "E1001")
            await emu.set_profile_access("full")
            assert (await client.user_profile("alice")).email == "alice@corp.example"
            await emu.set_profile_access("none")
            with pytest.raises(ProfileUnavailable):
                await client.user_profile("alice")
        finally:
            await client.close()
