"""A sender's profile from Feishu's contacts API: `FeishuApi.user_profile` and
`FeishuProvider.sender_profile` against the emulator (served on the test's loop: our client never
blocks), its permission-denied modes, and its control plane."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from channels.feishu.api import CONTACT_RANGE, CONTACT_SCOPES, FeishuApi
from channels.feishu.config import FeishuChannelConfig
from channels.feishu.emulator import FeishuEmulator, cli
from channels.feishu.emulator.contact import API_SCOPES
from channels.feishu.emulator.state import CallRecord
from channels.feishu.provider import FeishuProvider
from channels.model import ChannelId, ChatType, InboundMessage, Sender, SenderProfile
from channels.provider import ProfileUnavailable
from common.errors import ChannelError, RateLimited, TransientError
from tests.test_feishu_fidelity import lark_python

ID = "cli_0123456789abcdef"
SECRET = "feishu-profile-secret-8c1d"  # distinctive, so a leak into a message is detectable
USERS = "/open-apis/contact/v3/users"
LARK_DRIVER = Path(__file__).with_name("lark_contact_driver.py")


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def __call__(self, endpoint: str, status: str) -> None:
        self.requests.append((endpoint, status))


@pytest.fixture
async def emulator() -> AsyncIterator[FeishuEmulator]:
    emu = FeishuEmulator([(ID, SECRET)])
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def api(emulator: FeishuEmulator, recorder: Recorder) -> AsyncIterator[FeishuApi]:
    client = FeishuApi(
        app_id=ID, app_secret=SECRET, base_url=emulator.url, timeout=1.0, on_request=recorder
    )
    yield client
    await client.close()


def _message(open_id: str) -> InboundMessage:
    return InboundMessage(
        channel_id=ChannelId("fs"),
        platform="feishu",
        message_id="om_1",
        chat_id="oc_1",
        chat_type=ChatType.DIRECT,
        sender=Sender(platform_id=open_id, display_name="Alice"),
        text="hi",
        received_at=datetime.now(UTC),
    )


def _contact_calls(emulator: FeishuEmulator) -> list[CallRecord]:
    return [c for c in emulator.calls() if c.path.startswith(USERS + "/")]


async def test_a_profile_is_read_with_one_token_for_many_calls(
    api: FeishuApi, emulator: FeishuEmulator, recorder: Recorder
) -> None:
    emulator.contact.add_user(
        "ou_bob", email="", enterprise_email="bob@corp.example", mobile="+8613800000000"
    )
    alice = await api.user_profile("ou_alice")
    bob = await api.user_profile("ou_bob")
    assert alice.email == "alice@example.com"
    assert alice.mobile.startswith("+86139") and len(alice.mobile) == 14
    assert alice.employee_no.startswith("E")
    assert alice == await api.user_profile("ou_alice")  # derived from the id: stable
    # no personal e-mail: the enterprise one
    assert bob == SenderProfile("bob@corp.example", "+8613800000000", bob.employee_no)
    assert recorder.requests == [
        ("auth.tenant_token", "200"),
        ("contact.user", "200"),
        ("contact.user", "200"),
        ("contact.user", "200"),
    ]
    calls = emulator.calls(USERS + "/ou_alice")
    assert [c.status for c in calls] == [200, 200]
    assert all(c.code == 0 and c.app_id == ID for c in calls)


async def test_an_open_id_is_sent_escaped_in_the_path(
    api: FeishuApi, emulator: FeishuEmulator
) -> None:
    # a sender id never reaches another path: "ou_x/../y" stays one path segment (unescaped,
    # it would have asked for "y", which is no open id)
    profile = await api.user_profile("ou_x/../y")
    assert profile.email == "x/../y@example.com"
    assert len(_contact_calls(emulator)) == 1


async def test_without_the_contacts_scope_the_permission_is_named(
    api: FeishuApi, emulator: FeishuEmulator
) -> None:
    emulator.contact.deny("scope")
    with pytest.raises(ProfileUnavailable) as raised:
        await api.user_profile("ou_alice")
    assert raised.value.permission == CONTACT_SCOPES
    assert "contact:contact.base:readonly" in raised.value.permission
    assert "contact:user.email:readonly" in raised.value.permission
    assert "99991672" in str(raised.value)
    assert all(scope in str(raised.value) for scope in API_SCOPES)  # Feishu's own words kept
    assert SECRET not in str(raised.value)
    assert [(c.status, c.code) for c in _contact_calls(emulator)] == [(400, 99991672)]


async def test_a_sender_outside_the_contacts_range_is_not_an_auth_error(
    api: FeishuApi, emulator: FeishuEmulator
) -> None:
    emulator.contact.deny("range")  # HTTP 403: without the code, an AuthError
    with pytest.raises(ProfileUnavailable) as raised:
        await api.user_profile("ou_alice")
    assert raised.value.permission == CONTACT_RANGE
    assert "41050" in str(raised.value)


async def test_without_the_field_permissions_the_fields_are_empty(
    api: FeishuApi, emulator: FeishuEmulator
) -> None:
    emulator.contact.deny("fields")
    assert await api.user_profile("ou_alice") == SenderProfile()
    emulator.contact.deny(None)
    assert (await api.user_profile("ou_alice")).email == "alice@example.com"


async def test_failures_are_classified_and_bounded_by_the_timeout(
    api: FeishuApi, emulator: FeishuEmulator, recorder: Recorder
) -> None:
    emulator.add_fault(USERS + "/*", 429)
    with pytest.raises(RateLimited):
        await api.user_profile("ou_alice")
    emulator.add_fault(USERS + "/*", 503)
    with pytest.raises(TransientError):
        await api.user_profile("ou_alice")
    emulator.set_latency(1.5)  # beyond the client's 1 s
    with pytest.raises(TransientError, match="no answer within 1s"):
        await api.user_profile("ou_alice")
    assert recorder.requests[-1] == ("contact.user", "timeout")
    emulator.set_latency(0.0)
    with pytest.raises(ChannelError) as raised:
        await api.user_profile("not-an-open-id")  # the emulator's validation error
    assert not isinstance(raised.value, ProfileUnavailable | TransientError)


async def test_an_expired_token_is_refreshed_and_the_profile_read(
    api: FeishuApi, emulator: FeishuEmulator, recorder: Recorder
) -> None:
    await api.user_profile("ou_alice")
    assert emulator.expire_tokens() == 1
    assert (await api.user_profile("ou_alice")).email == "alice@example.com"
    assert [r for r in recorder.requests if r[0] == "auth.tenant_token"] == [
        ("auth.tenant_token", "200"),
        ("auth.tenant_token", "200"),
    ]


async def test_the_provider_asks_by_the_senders_open_id(emulator: FeishuEmulator) -> None:
    emulator.contact.add_user("ou_carol", email="carol@corp.example", employee_no="A-7")

    async def sink(message: InboundMessage) -> None:
        raise AssertionError("nothing is received here")

    config = FeishuChannelConfig(
        id="fs", app_id=ID, app_secret=SecretStr(SECRET), domain=emulator.url
    )
    provider = FeishuProvider(config, sink)
    try:
        profile = await provider.sender_profile(_message("ou_carol"))
        assert (profile.email, profile.employee_no) == ("carol@corp.example", "A-7")
        emulator.contact.deny("scope")
        with pytest.raises(ProfileUnavailable):
            await provider.sender_profile(_message("ou_carol"))
    finally:
        await provider.close()
    with pytest.raises(ChannelError, match="client closed"):
        await provider.sender_profile(_message("ou_carol"))


async def test_the_control_plane_registers_users_and_denies(emulator: FeishuEmulator) -> None:
    base = emulator.url + "/_emulator/contact/"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            base + "users", json={"open_id": "ou_dave", "email": "dave@corp.example"}
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["email"] == "dave@corp.example"
        async with http.post(base + "users", json={"open_id": "dave"}) as resp:
            assert resp.status == 400
        async with http.post(base + "users", json={"open_id": "ou_e", "shoe": "9"}) as resp:
            assert resp.status == 400
        async with http.post(base + "denied", json={"denied": "range"}) as resp:
            assert (await resp.json()) == {"denied": "range"}
        async with http.post(base + "denied", json={"denied": "everything"}) as resp:
            assert resp.status == 400
    assert emulator.contact.user("ou_dave").email == "dave@corp.example"
    assert emulator.contact.denied == "range"


async def test_the_command_line_option_denies_and_is_checked() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert parser.parse_args(["--contact-denied", "fields"]).contact_denied == "fields"
    assert parser.parse_args([]).contact_denied == ""
    assert await cli.main(parser.parse_args(["--contact-denied", "all"])) == 2
    # what main hands the emulator, checked again there
    assert FeishuEmulator(contact_denied="fields").contact.denied == "fields"
    with pytest.raises(ValueError, match="denied must be one of"):
        FeishuEmulator(contact_denied="all")


# -- the official SDK reads the same answers -------------------------------------------------


async def _lark_profile(url: str, open_id: str) -> dict[str, Any]:
    """What lark-oapi's `contact.v3.user.get` makes of the emulator's answer (a subprocess)."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    proc = await asyncio.create_subprocess_exec(
        lark_python(),
        str(LARK_DRIVER),
        *("--domain", url, "--app-id", ID, "--app-secret", SECRET, "--open-id", open_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        async with asyncio.timeout(30):
            output, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    prefix = "@@lark-contact "
    lines = [line for line in output.decode().splitlines() if line.startswith(prefix)]
    assert lines, output.decode()[-2000:]
    record: dict[str, Any] = json.loads(lines[-1][len(prefix) :])
    return record


async def test_the_sdk_reads_the_same_profile_and_the_same_denial(
    emulator: FeishuEmulator, api: FeishuApi
) -> None:
    emulator.contact.add_user("ou_erin", email="", enterprise_email="erin@corp.example")
    record = await _lark_profile(emulator.url, "ou_erin")
    ours = await api.user_profile("ou_erin")
    assert (record["code"], record["enterprise_email"], record["email"]) == (
        0,
        "erin@corp.example",
        "",
    )
    assert (record["mobile"], record["employee_no"]) == (ours.mobile, ours.employee_no)
    assert ours.email == "erin@corp.example"
    emulator.contact.deny("scope")
    denied = await _lark_profile(emulator.url, "ou_erin")
    assert denied["code"] == 99991672
    assert "contact:contact.base:readonly" in denied["msg"]
    assert denied["email"] is None
