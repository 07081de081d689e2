"""The shared emulator base (`channels.emulator`) behaves the same on every platform: the common
control-plane routes, injected faults that are used up, latency, the call record with secrets
masked, token expiry, and `channeld emulate`'s address parsing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from channels.dingtalk.emulator import DingTalkEmulator
from channels.emulator.cli import split_listen
from channels.emulator.server import EmulatorServer
from channels.feishu.emulator import FeishuEmulator


@dataclass(frozen=True)
class Case:
    """One platform's emulator and how its token endpoint is called."""

    name: str
    make: type[EmulatorServer[Any, Any, Any, Any]]
    app_field: str
    chat_field: str
    app_id: str
    token_path: str
    token_body: dict[str, str]  # the secret's field is masked in the call record
    secret_field: str


CASES = [
    Case(
        "dingtalk",
        DingTalkEmulator,
        "client_id",
        "conversation_id",
        "ding-emulator",
        "/v1.0/oauth2/accessToken",
        {"appKey": "ding-emulator", "appSecret": "secret-emulator"},
        "appSecret",
    ),
    Case(
        "feishu",
        FeishuEmulator,
        "app_id",
        "chat_id",
        "cli_0123456789abcdef",
        "/open-apis/auth/v3/tenant_access_token/internal",
        {"app_id": "cli_0123456789abcdef", "app_secret": "feishu-emulator-secret"},
        "app_secret",
    ),
]


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    value: Case = request.param
    return value


@pytest.fixture
async def served(case: Case) -> AsyncIterator[tuple[EmulatorServer[Any, Any, Any, Any], str]]:
    emulator = case.make()
    url = await emulator.start("127.0.0.1", 0)
    try:
        yield emulator, url
    finally:
        await emulator.stop()


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


async def test_shared_control_routes_answer_alike(
    case: Case, served: tuple[EmulatorServer[Any, Any, Any, Any], str]
) -> None:
    emulator, url = served
    control = url + "/_emulator/"
    async with aiohttp.ClientSession() as http:
        assert await call(http, "GET", control + "connections") == (200, [])
        assert await call(http, "GET", control + "cards") == (200, [])
        assert await call(http, "GET", control + "acks") == (200, [])
        assert await call(http, "POST", control + "latency", {"seconds": 0.25}) == (
            200,
            {"latency": 0.25},
        )
        assert emulator.state.latency == 0.25
        body = {case.app_field: case.app_id}
        assert await call(http, "POST", control + "connections/silence", body) == (
            200,
            {"connections": 0},
        )
        assert await call(http, "POST", control + "connections/drop", body) == (
            200,
            {"connections": 0},
        )
        unknown = (404, {"error": "not found: 'nope'"})
        assert await call(http, "GET", f"{control}chat?{case.chat_field}=nope") == unknown
        assert await call(http, "POST", control + "messages", {case.app_field: "nope"}) == unknown


async def test_a_fault_answers_until_used_up_then_the_real_route_does(
    case: Case, served: tuple[EmulatorServer[Any, Any, Any, Any], str]
) -> None:
    emulator, url = served
    faults = url + "/_emulator/faults"
    async with aiohttp.ClientSession() as http:
        status, fault = await call(http, "POST", faults, {"path": case.token_path, "status": 503})
        assert status == 200 and (fault["remaining"], fault["hits"]) == (1, 0)
        async with http.post(url + case.token_path, json=case.token_body) as resp:
            assert resp.status == 503
        async with http.post(url + case.token_path, json=case.token_body) as resp:
            assert resp.status == 200
        assert await call(http, "GET", faults) == (200, [])  # used up, so gone
        recorded = [c.fault for c in emulator.calls(case.token_path, "post")]
        assert recorded == [True, False]
        await call(http, "POST", faults, {"path": "/never/*", "status": 500, "times": None})
        assert len(emulator.state.faults) == 1
        assert await call(http, "DELETE", faults) == (200, [])


async def test_the_call_record_masks_secrets_and_names_the_app(
    case: Case, served: tuple[EmulatorServer[Any, Any, Any, Any], str]
) -> None:
    emulator, url = served
    async with aiohttp.ClientSession() as http:
        async with http.post(url + case.token_path, json=case.token_body) as resp:
            assert resp.status == 200
        status, calls = await call(http, "GET", url + "/_emulator/calls?since=0")
    assert status == 200
    (recorded,) = calls
    assert recorded["body"][case.secret_field] == "***"
    assert recorded[case.app_field] == case.app_id
    assert recorded["seq"] == 1 and recorded["fault"] is False
    assert case.token_body[case.secret_field] not in str(emulator.calls())


async def test_expired_tokens_are_refused(
    case: Case, served: tuple[EmulatorServer[Any, Any, Any, Any], str]
) -> None:
    emulator, url = served
    async with aiohttp.ClientSession() as http:
        async with http.post(url + case.token_path, json=case.token_body) as resp:
            assert resp.status == 200
        assert len(emulator.state.tokens) == 1
        token = next(iter(emulator.state.tokens))
        assert emulator.state.app_for_token(token) == case.app_id
        status, answer = await call(http, "POST", url + "/_emulator/tokens/expire")
    assert (status, answer) == (200, {"expired": 1})
    assert emulator.state.app_for_token(token) is None


def test_listen_addresses_parse_like_the_config_key() -> None:
    assert split_listen("127.0.0.1:8788") == ("127.0.0.1", 8788)
    assert split_listen("[::1]:0") == ("::1", 0)
    assert split_listen(":9") == ("127.0.0.1", 9)
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_listen("localhost")
