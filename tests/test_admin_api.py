"""The admin REST API against a real daemon: auth, CRUD, write-only secrets, live state."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from channels.dingtalk.emulator import EmulatorThread
from daemon.app import Daemon
from daemon.config import validate
from daemon.openapi import openapi_document
from tests.admin_support import Header, build_request, raw_http
from tests.dingtalk_support import DINGTALK_CLIENT_ID, DINGTALK_CLIENT_SECRET, dingtalk_emulator
from tests.e2e_support import CHANNEL, FAST_BACKOFF, settings_for
from tests.feishu_support import (
    FEISHU_APP_ID,
    FEISHU_APP_SECRET,
    FeishuEmulatorThread,
    feishu_emulator,
)

__all__ = ["dingtalk_emulator", "feishu_emulator"]

TOKEN = "admin-token-123"
NEW_SECRET = "rotated-secret-456"


class Admin:
    """A bearer-token HTTP client for the daemon's admin listener."""

    def __init__(
        self, http: aiohttp.ClientSession, daemon: Daemon, token: str | None = TOKEN
    ) -> None:
        assert daemon.admin is not None
        self.base = f"http://127.0.0.1:{daemon.admin.port}"
        self.http = http
        self.daemon = daemon
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = dict(kw.pop("headers", self.headers))
        if method != "GET":  # as the page and the CLI do: the daemon refuses other media types
            headers.setdefault("Content-Type", "application/json")
        async with self.http.request(
            method, self.base + path, json=body, headers=headers, **kw
        ) as r:
            payload = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, payload


@pytest.fixture
async def admin(tmp_path: Path, dingtalk_emulator: EmulatorThread) -> AsyncIterator[Admin]:
    base = settings_for(tmp_path, dingtalk_emulator.url, None).model_dump(mode="python")
    data = {
        "daemon": {"state_dir": str(tmp_path), "log_level": "DEBUG"},
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
        "agents": {"default": {"type": "echo", "delay": 0.01}},
        "channels": [
            {**base["channels"][0], "client_secret": DINGTALK_CLIENT_SECRET},
        ],
    }
    daemon = Daemon(validate(data), backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Admin(http, daemon)
    finally:
        await daemon.stop()


def api_channel(**overrides: Any) -> dict[str, Any]:
    body = {
        "id": "api-1",
        "type": "dingtalk",
        "agent": "default",
        "client_id": DINGTALK_CLIENT_ID,
        "client_secret": DINGTALK_CLIENT_SECRET,
        "card_template_id": "tpl.ai.schema",
        "api_base": None,
        "card_update_interval": 0.05,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def wait_state(admin: Admin, channel: str, state: str) -> dict[str, Any]:
    view: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal view
        _, view = await admin.call("GET", f"/api/v1/channels/{channel}")
        return bool(view["status"]["state"] == state)

    async with asyncio.timeout(10):
        while not await check():
            await asyncio.sleep(0.02)
    return view


def documented_operations() -> list[tuple[str, str, bool]]:
    """(method, path with ids filled in, needs the token) for every operation of the document."""
    document = openapi_document()
    operations = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            secured = operation.get("security", document["security"]) != []
            operations.append((method.upper(), path.replace("{id}", CHANNEL), secured))
    return operations


WRONG_CREDENTIALS: list[Header] = [
    ("Authorization", "Bearer nope-nope-nope"),
    ("Authorization", TOKEN),  # no scheme
    ("Authorization", f"Basic {TOKEN}"),
    ("Authorization", f"Bearer {TOKEN}x"),
    ("Authorization", f"Bearer {TOKEN[:-1]}"),
    ("Authorization", "Bearer"),
    ("Authorization", f"Bearer {TOKEN}".encode() + b"\xff\xfe"),  # bytes no decoder accepts
    ("Authorization", "Bearer " + "é" * 20),
]


async def test_every_documented_operation_wants_the_token(admin: Admin) -> None:
    """The matrix: each route and method of the OpenAPI document, with no or a wrong token."""
    assert admin.daemon.admin is not None and admin.daemon.admin.port is not None
    port = admin.daemon.admin.port
    operations = documented_operations()
    assert len(operations) >= 12  # test_openapi_document_matches_the_routes: the document is whole
    json_type = ("Content-Type", "application/json")
    for method, path, secured in operations:
        extra = [json_type] if method != "GET" else []
        for credentials in [[], *([c] for c in WRONG_CREDENTIALS)]:
            answer = await raw_http(port, build_request(method, path, port, [*credentials, *extra]))
            if not secured:
                assert answer.status == 200, (method, path)
                continue
            assert answer.status == 401, (method, path, credentials, answer.body)
            assert answer.error_code() == "unauthorized"
            assert answer.headers["www-authenticate"] == 'Bearer realm="channeld"'
    # the scheme is case-insensitive (RFC 9110), the token is not
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        status, _ = await admin.call(
            "GET", "/api/v1/channels", headers={"Authorization": f"{scheme} {TOKEN}"}
        )
        assert status == 200, scheme
    status, _ = await admin.call(
        "GET", "/api/v1/channels", headers={"Authorization": f"Bearer {TOKEN.upper()}"}
    )
    assert status == 401
    # probes and metrics stay open for orchestrators
    assert (await admin.call("GET", "/healthz", headers={}))[0] == 200
    assert (await admin.call("GET", "/readyz", headers={}))[0] == 200
    assert (await admin.call("GET", "/metrics", headers={}))[0] == 200


async def test_crud_round_trip_of_an_api_channel(
    admin: Admin, dingtalk_emulator: EmulatorThread
) -> None:
    body = api_channel(api_base=dingtalk_emulator.url)
    status, created = await admin.call("POST", "/api/v1/channels", body)
    assert status == 201, created
    assert created["source"] == "api"
    assert created["settings"]["client_secret"] == "***"
    view = await wait_state(admin, "api-1", "connected")
    assert view["status"]["connected_at"] is not None

    status, listed = await admin.call("GET", "/api/v1/channels")
    assert sorted(c["id"] for c in listed["channels"]) == ["api-1", "dt"]

    status, edited = await admin.call(
        "PATCH", "/api/v1/channels/api-1", {"agent": "default", "idle_reset_minutes": 30}
    )
    assert status == 200, edited
    assert edited["settings"]["idle_reset_minutes"] == 30
    assert edited["version"] == created["version"] + 1
    await wait_state(admin, "api-1", "connected")

    assert (await admin.call("POST", "/api/v1/channels", body))[0] == 409
    status, _ = await admin.call("DELETE", "/api/v1/channels/api-1")
    assert status == 204
    status, missing = await admin.call("GET", "/api/v1/channels/api-1")
    assert status == 404
    assert "api-1" in missing["error"]["message"]
    await dingtalk_emulator.wait_for(lambda e: len(e.live_connections(DINGTALK_CLIENT_ID)) == 1)


async def test_secrets_are_write_only(
    admin: Admin, dingtalk_emulator: EmulatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await admin.call("POST", "/api/v1/channels", api_channel(api_base=dingtalk_emulator.url))
    await wait_state(admin, "api-1", "connected")

    for patch in ({"client_secret": "***"}, {"card_update_interval": 0.1}):
        status, view = await admin.call("PATCH", "/api/v1/channels/api-1", patch)
        assert status == 200, view
        await wait_state(admin, "api-1", "connected")  # still the right secret: it connects

    status, error = await admin.call("PATCH", "/api/v1/channels/api-1", {"client_secret": ""})
    assert status == 422
    assert error["error"]["fields"][0]["path"] == "client_secret"

    status, view = await admin.call(
        "PATCH", "/api/v1/channels/api-1", {"client_secret": NEW_SECRET}
    )
    assert status == 200
    # the emulator does not know this secret: the channel must fail with the real error
    view = await wait_state(admin, "api-1", "failed")
    assert view["status"]["last_error"].startswith("AuthError")

    everything = [str(await admin.call("GET", "/api/v1/channels")), str(view), caplog.text]
    for text in everything:
        assert DINGTALK_CLIENT_SECRET not in text
        assert NEW_SECRET not in text
    assert admin.daemon.store is not None
    record = await admin.daemon.store.get_channel("api-1")
    assert record is not None
    assert NEW_SECRET not in str(record.spec)  # encrypted at rest


async def test_config_channels_are_read_only_but_can_be_toggled(
    admin: Admin, dingtalk_emulator: EmulatorThread
) -> None:
    status, body = await admin.call("PATCH", "/api/v1/channels/dt", {"agent": "default"})
    assert status == 409
    assert "config file" in body["error"]["message"]
    assert (await admin.call("DELETE", "/api/v1/channels/dt"))[0] == 409

    first = await wait_state(admin, "dt", "connected")
    status, view = await admin.call("POST", "/api/v1/channels/dt/disable")
    assert status == 200
    assert view["status"]["state"] == "disabled"
    assert view["enabled"] is False
    assert await dingtalk_emulator.live_connections(DINGTALK_CLIENT_ID) == []

    status, view = await admin.call("POST", "/api/v1/channels/dt/enable")
    assert status == 200
    again = await wait_state(admin, "dt", "connected")
    assert again["status"]["connected_at"] > first["status"]["connected_at"]
    assert len(await dingtalk_emulator.live_connections(DINGTALK_CLIENT_ID)) == 1


async def test_restart_and_edit_never_hold_two_sockets(
    admin: Admin, dingtalk_emulator: EmulatorThread
) -> None:
    await admin.call("POST", "/api/v1/channels/dt/disable")
    await admin.call("POST", "/api/v1/channels", api_channel(api_base=dingtalk_emulator.url))
    await wait_state(admin, "api-1", "connected")
    for _ in range(3):
        await admin.call("POST", "/api/v1/channels/api-1/restart")
        await wait_state(admin, "api-1", "connected")
        await admin.call("PATCH", "/api/v1/channels/api-1", {"card_update_interval": 0.2})
        await wait_state(admin, "api-1", "connected")
    connections = await dingtalk_emulator.call(lambda e: e.connections(DINGTALK_CLIENT_ID))
    intervals = sorted((c.opened_at, c.closed_at or float("inf")) for c in connections)
    assert len(intervals) >= 7
    for (_, closed), (opened, _) in itertools.pairwise(intervals):
        assert closed <= opened, "a new socket was opened before the old one closed"


async def test_a_stopped_provider_keeps_its_real_last_error(
    admin: Admin, dingtalk_emulator: EmulatorThread
) -> None:
    body = api_channel(client_secret="bad-secret-789", api_base=dingtalk_emulator.url)
    await admin.call("POST", "/api/v1/channels", body)
    view = await wait_state(admin, "api-1", "failed")
    error = view["status"]["last_error"]
    assert error.startswith("AuthError")
    await admin.call("POST", "/api/v1/channels/api-1/disable")
    view = await wait_state(admin, "api-1", "disabled")
    assert view["status"]["last_error"] == error


async def test_validation_errors_name_the_field(admin: Admin) -> None:
    status, body = await admin.call("POST", "/api/v1/channels", api_channel(client_id=""))
    assert status == 422
    assert [f["path"] for f in body["error"]["fields"]] == ["client_id"]
    status, body = await admin.call("POST", "/api/v1/channels", api_channel(agent="ghost"))
    assert status == 422
    assert body["error"]["fields"][0]["path"] == "agent"
    status, body = await admin.call("POST", "/api/v1/channels", api_channel(type="icq"))
    assert status == 422
    async with admin.http.post(
        admin.base + "/api/v1/channels",
        data="{",
        headers={**admin.headers, "Content-Type": "application/json"},
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "bad_request"
    assert (await admin.call("GET", "/api/v1/nothing-here"))[0] == 404


async def test_conversations_and_messages(admin: Admin, dingtalk_emulator: EmulatorThread) -> None:
    await wait_state(admin, "dt", "connected")
    sent = await dingtalk_emulator.send_user_message(DINGTALK_CLIENT_ID, text="hello api")
    await dingtalk_emulator.wait_for(
        lambda e: any(
            i["kind"] == "card" and i.get("done")
            for i in (e.chat_view(sent.conversation_id) or {"items": []})["items"]
        )
    )
    status, body = await admin.call("GET", "/api/v1/conversations?channel=dt")
    assert status == 200
    conversation = body["conversations"][0]
    path = f"/api/v1/conversations/{conversation['id']}/messages"
    async with asyncio.timeout(10):  # the answer is stored right after its card is finished
        while len((await admin.call("GET", path))[1]["messages"]) < 2:
            await asyncio.sleep(0.02)
    status, body = await admin.call("GET", path)
    assert status == 200
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["messages"][0]["content"] == "hello api"
    assert (await admin.call("GET", "/api/v1/conversations/nope/messages"))[0] == 404
    assert (await admin.call("GET", "/api/v1/conversations?channel=nope"))[0] == 404


async def test_openapi_document_matches_the_routes(admin: Admin) -> None:
    status, document = await admin.call("GET", "/api/v1/openapi.json", headers={})
    assert status == 200
    assert document == openapi_document()
    assert admin.daemon.admin is not None
    app = admin.daemon.admin.app
    routes = {
        (r.method.lower(), re.sub(r"\{(\w+)\}", r"{\1}", r.resource.canonical))
        for r in app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/api/v1")
        and r.method != "HEAD"
    }
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert routes == documented


async def test_a_feishu_channel_through_the_api(
    admin: Admin, feishu_emulator: FeishuEmulatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {
        "id": "fs-api",
        "type": "feishu",
        "app_id": FEISHU_APP_ID,
        "app_secret": FEISHU_APP_SECRET,
        "domain": feishu_emulator.url,
    }
    status, created = await admin.call("POST", "/api/v1/channels", body)
    assert status == 201, created
    assert created["settings"]["app_secret"] == "***"
    assert created["type"] == "feishu"
    await wait_state(admin, "fs-api", "connected")
    await feishu_emulator.wait_for(lambda e: len(e.live_connections(FEISHU_APP_ID)) == 1)

    status, error = await admin.call("PATCH", "/api/v1/channels/fs-api", {"domain": "larkspur"})
    assert status == 422
    assert error["error"]["fields"][0]["path"] == "domain"
    status, _ = await admin.call("PATCH", "/api/v1/channels/fs-api", {"app_secret": NEW_SECRET})
    assert status == 200
    view = await wait_state(admin, "fs-api", "failed")
    assert view["status"]["last_error"].startswith("AuthError")
    for text in (str(await admin.call("GET", "/api/v1/channels")), str(view), caplog.text):
        assert FEISHU_APP_SECRET not in text
        assert NEW_SECRET not in text
