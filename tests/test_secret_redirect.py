"""Write-only secrets cannot be read back by pointing a channel at another host (issue 10 #2).

A real listener on port 0 records every request it gets: an API channel whose endpoint setting is
patched without its secret must send it nothing, and the stored settings must not move.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from agents.config import OpenAIAgentConfig
from channels.dingtalk.config import DingTalkChannelConfig
from channels.dingtalk.emulator import EmulatorThread
from channels.easemob.config import EasemobChannelConfig
from channels.feishu.config import FeishuChannelConfig
from channels.zim.config import ZimChannelConfig
from daemon.app import Daemon
from daemon.config import validate
from daemon.openapi import openapi_document
from tests.dingtalk_support import DINGTALK_CLIENT_ID, DINGTALK_CLIENT_SECRET, dingtalk_emulator
from tests.e2e_support import FAST_BACKOFF
from tests.feishu_support import (
    FEISHU_APP_ID,
    FEISHU_APP_SECRET,
    FeishuEmulatorThread,
    feishu_emulator,
)

__all__ = ["dingtalk_emulator", "feishu_emulator"]

TOKEN = "admin-token-redirect"


class Recorder:
    """An HTTP listener that records every request and answers with a chatty JSON error."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.arrived = asyncio.Event()
        self._answer = answer
        self._runner = web.ServerRunner(web.Server(self._handle))
        self.url = ""

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        self.requests.append((request.method, request.path_qs, await request.read()))
        self.arrived.set()
        return web.json_response(self._answer, status=400)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        await self._runner.cleanup()


class Admin:
    """Bearer-token JSON calls to the daemon's admin API."""

    def __init__(self, http: aiohttp.ClientSession, port: int) -> None:
        self.http = http
        self.base = f"http://127.0.0.1:{port}/api/v1"

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.json() if r.content_type == "application/json" else None

    async def wait_view(
        self, channel: str, predicate: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while True:
                _, view = await self.call("GET", f"/channels/{channel}")
                if predicate(view):
                    return dict(view)
                await asyncio.sleep(0.02)


def connected(view: dict[str, Any]) -> bool:
    return bool(view["status"]["state"] == "connected")


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    # a platform error that echoes what it got and rambles on: what a redirect target could say
    answer = {
        "code": "InvalidParameter",
        "message": f"got {DINGTALK_CLIENT_SECRET} {FEISHU_APP_SECRET} accessToken=abc123 "
        + "x" * 400,
        "msg": f"got {FEISHU_APP_SECRET} tenant_access_token=t-abc123 " + "y" * 400,
    }
    server = Recorder(answer)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    settings = validate(
        {
            "daemon": {"state_dir": str(tmp_path), "graceful_timeout": 0},
            "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
            "agents": {"default": {"type": "echo", "delay": 0.01}},
        }
    )
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    assert daemon.admin is not None and daemon.admin.port is not None
    try:
        async with aiohttp.ClientSession() as http:
            yield Admin(http, daemon.admin.port)
    finally:
        await daemon.stop()


async def refused_without_the_secret(
    admin: Admin, channel: str, setting: str, secret: str, target: str
) -> None:
    """Every way of moving `setting` to `target` without `secret` is refused and changes nothing."""
    _, before = await admin.call("GET", f"/channels/{channel}")
    status, body = await admin.call("PATCH", f"/channels/{channel}", {setting: target + "/x?"})
    assert status == 422, body  # the `?` would turn the fixed request path into a query
    assert body["error"]["fields"][0]["path"] == setting
    assert "'?'" in body["error"]["message"]
    for patch in (
        {setting: target + "/x"},
        {setting: target},
        {setting: target, secret: "***"},
        {setting: target, secret: None},
    ):
        status, body = await admin.call("PATCH", f"/channels/{channel}", patch)
        assert status == 409, (patch, body)
        assert body["error"]["code"] == "secret_required"
        assert setting in body["error"]["message"]
        assert [f["path"] for f in body["error"]["fields"]] == [secret]
    _, after = await admin.call("GET", f"/channels/{channel}")
    assert after["settings"] == before["settings"]
    assert after["version"] == before["version"]
    # a restart reconnects with what is stored: had anything moved, the listener would hear it now
    status, _ = await admin.call("POST", f"/channels/{channel}/restart", {})
    assert status == 200
    await admin.wait_view(
        channel,
        lambda v: connected(v) and v["status"]["connected_at"] != before["status"]["connected_at"],
    )


async def test_dingtalk_api_base_needs_the_secret_again(
    admin: Admin, dingtalk_emulator: EmulatorThread, recorder: Recorder
) -> None:
    body = {
        "id": "dt-api",
        "type": "dingtalk",
        "client_id": DINGTALK_CLIENT_ID,
        "client_secret": DINGTALK_CLIENT_SECRET,
        "api_base": dingtalk_emulator.url,
    }
    status, created = await admin.call("POST", "/channels", body)
    assert status == 201, created
    await admin.wait_view("dt-api", connected)
    # the same address, written differently, is not a move
    status, same = await admin.call(
        "PATCH", "/channels/dt-api", {"api_base": body["api_base"] + "/"}
    )
    assert status == 200, same

    await refused_without_the_secret(admin, "dt-api", "api_base", "client_secret", recorder.url)
    assert recorder.requests == []

    # given again, the operator's choice is honoured: the path stays a path
    patch = {"api_base": recorder.url + "/x", "client_secret": DINGTALK_CLIENT_SECRET}
    status, moved = await admin.call("PATCH", "/channels/dt-api", patch)
    assert status == 200, moved
    assert moved["settings"]["api_base"] == recorder.url + "/x"
    async with asyncio.timeout(10):
        await recorder.arrived.wait()
    method, path, _ = recorder.requests[0]
    assert (method, path) == ("POST", "/x/v1.0/gateway/connections/open")
    # what the other host answered reaches the status bounded and without secrets or tokens
    view = await admin.wait_view("dt-api", lambda v: v["status"]["last_error"] is not None)
    error = view["status"]["last_error"]
    assert error.startswith("AuthError: dingtalk gateway.open: HTTP 400 InvalidParameter")
    assert len(error) <= 200
    assert DINGTALK_CLIENT_SECRET not in error
    assert "abc123" not in error


async def test_feishu_domain_needs_the_secret_again(
    admin: Admin, feishu_emulator: FeishuEmulatorThread, recorder: Recorder
) -> None:
    body = {
        "id": "fs-api",
        "type": "feishu",
        "app_id": FEISHU_APP_ID,
        "app_secret": FEISHU_APP_SECRET,
        "domain": feishu_emulator.url,
    }
    status, created = await admin.call("POST", "/channels", body)
    assert status == 201, created
    await admin.wait_view("fs-api", connected)

    await refused_without_the_secret(admin, "fs-api", "domain", "app_secret", recorder.url)
    # a named domain is another host too
    status, refused = await admin.call("PATCH", "/channels/fs-api", {"domain": "lark"})
    assert status == 409, refused
    assert recorder.requests == []

    patch = {"domain": recorder.url + "/x", "app_secret": FEISHU_APP_SECRET}
    status, moved = await admin.call("PATCH", "/channels/fs-api", patch)
    assert status == 200, moved
    async with asyncio.timeout(10):
        await recorder.arrived.wait()
    method, path, _ = recorder.requests[0]
    assert (method, path) == ("POST", "/x/open-apis/auth/v3/tenant_access_token/internal")
    view = await admin.wait_view("fs-api", lambda v: v["status"]["last_error"] is not None)
    error = view["status"]["last_error"]
    assert error.startswith("AuthError: feishu auth.tenant_token: code -1: got ***")
    assert len(error) <= 200
    assert FEISHU_APP_SECRET not in error
    assert "abc123" not in error


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:9/x?", "'?'"),
        ("http://127.0.0.1:9/x?a=b", "'?'"),
        ("http://127.0.0.1:9/x#", "'#'"),
        ("http://user:pw@127.0.0.1:9/x", "userinfo"),
        ("http://evil.example@127.0.0.1/", "userinfo"),
        ("http://127.0.0.1:0/", "port"),
        ("http://127.0.0.1:99999/", "port"),
        ("http://127.0.0.1:x/", "port"),
        ("http:///v1", "host"),
        ("http://a b/", "spaces"),
        ("http://h\\@evil/", "backslashes"),
        ("http://h/\u00e9", "path"),
        ("ftp://h/", "http"),
        ("h/x", "http"),
    ],
)
def test_base_urls_refuse_what_could_redirect_a_request(url: str, problem: str) -> None:
    for build in (
        lambda: DingTalkChannelConfig(id="d", client_id="c", client_secret="s", api_base=url),
        lambda: FeishuChannelConfig(id="f", app_id="a", app_secret="s", domain=url),
        lambda: OpenAIAgentConfig(type="openai", base_url=url, model="m"),
    ):
        with pytest.raises(ValidationError) as caught:
            build()
        error = caught.value.errors()[0]
        assert error["loc"][0] in {"api_base", "domain", "base_url"}
        assert problem in error["msg"]


def test_base_urls_are_rebuilt_from_their_parts() -> None:
    cases = {
        "HTTPS://Open.Example.COM/": "https://open.example.com",
        "http://127.0.0.1:8080/a/b/": "http://127.0.0.1:8080/a/b",
        "http://[0:0::1]:9/v1": "http://[::1]:9/v1",
        "http://llm.internal/v1/%7Euser": "http://llm.internal/v1/%7Euser",
    }
    for url, rebuilt in cases.items():
        assert OpenAIAgentConfig(type="openai", base_url=url, model="m").base_url == rebuilt
        assert FeishuChannelConfig(id="f", app_id="a", app_secret="s", domain=url).domain == rebuilt
    assert FeishuChannelConfig(id="f", app_id="a", app_secret="s", domain="lark").domain == "lark"


def test_cloud_apis_that_receive_an_apps_secret_need_https_beyond_loopback() -> None:
    def zim(url: str) -> ZimChannelConfig:
        return ZimChannelConfig(
            id="z", app_id=1, server_secret="s", robot_id="@RBT#bot", api_base=url
        )

    def easemob(url: str) -> EasemobChannelConfig:
        return EasemobChannelConfig(
            id="e",
            api_base=url,
            org_name="org",
            app_name="app",
            client_id="c",
            client_secret="s",
            callback_secret="k",
            bot_user="aibot",
        )

    for build in (zim, easemob):
        with pytest.raises(ValidationError, match="must be an https:// URL"):
            build("http://a1.easemob.example")
        assert build("https://a1.easemob.example").api_base == "https://a1.easemob.example"
        for emulator in ("http://127.0.0.1:8791", "http://localhost:8791", "http://[::1]:8791"):
            assert build(emulator).api_base == emulator


def test_the_endpoint_settings_are_marked_in_the_openapi_document() -> None:
    schemas = openapi_document()["components"]["schemas"]
    marked = {
        (name, prop)
        for name, schema in schemas.items()
        for prop, spec in schema.get("properties", {}).items()
        if spec.get("x-sends-secrets")
    }
    assert marked == {
        ("DingTalkChannelConfig", "api_base"),
        ("DingTalkChannelConfig", "oapi_base"),  # the member-details call takes the token there
        ("FeishuChannelConfig", "domain"),
        ("WuKongIMChannelConfig", "api_base"),
        ("ZimChannelConfig", "api_base"),
        ("EasemobChannelConfig", "api_base"),
        ("ZegoVoice", "api_base"),  # [channels.voice.zego]: where the server secret signs to
        ("AliyunVoice", "endpoint"),  # [channels.voice.aliyun]: where the access key signs to
        ("VoiceConfig", "public_base_url"),  # where ZEGO sends each call's secret
    }
