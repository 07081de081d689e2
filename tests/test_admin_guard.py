"""The admin listener against what a hostile web page can send: CSRF, DNS rebinding, odd bytes.

A page the operator visits can POST to 127.0.0.1 with a "simple" content type (no preflight), and
a page whose DNS name rebinds to 127.0.0.1 can read answers. These are the exact requests such
pages produce; each is sent with the right token, so what refuses them is the guard, not auth.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from channels.dingtalk.emulator import EmulatorThread
from daemon.app import Daemon
from daemon.config import validate
from tests.admin_support import Header, RawResponse, build_request, raw_http
from tests.dingtalk_support import (
    DINGTALK_CLIENT_ID,
    DINGTALK_CLIENT_SECRET,
    DINGTALK_TEMPLATE,
    dingtalk_emulator,
)
from tests.e2e_support import CHANNEL, FAST_BACKOFF, wait_until

__all__ = ["dingtalk_emulator"]

TOKEN = "guard-admin-token"
AUTH: Header = ("Authorization", f"Bearer {TOKEN}")
JSON: Header = ("Content-Type", "application/json")
EVIL = "https://evil.example"
CROSS_SITE: list[Header] = [("Origin", EVIL), ("Sec-Fetch-Site", "cross-site")]


class Listener:
    """Raw requests to a running daemon's admin port, with the token."""

    def __init__(self, daemon: Daemon) -> None:
        assert daemon.admin is not None and daemon.admin.port is not None
        self.daemon = daemon
        self.port = daemon.admin.port
        self.origin = f"http://127.0.0.1:{self.port}"

    async def send(
        self,
        method: str,
        path: str,
        headers: list[Header],
        body: bytes | None = None,
        *,
        host: bytes | str | None = None,
        auth: bool = True,
    ) -> RawResponse:
        sent = [AUTH, *headers] if auth else headers
        return await raw_http(
            self.port, build_request(method, path, self.port, sent, body, host=host)
        )

    async def channel_ids(self) -> list[str]:
        answer = await self.send("GET", "/api/v1/channels", [])
        assert answer.status == 200
        return sorted(c["id"] for c in answer.json()["channels"])

    def enabled(self, channel_id: str) -> bool:
        assert self.daemon.manager is not None
        return self.daemon.manager.status(channel_id).state.value != "disabled"


def config(tmp_path: Path, emulator_url: str, **admin: Any) -> dict[str, Any]:
    return {
        "daemon": {"state_dir": str(tmp_path), "log_level": "DEBUG", "graceful_timeout": 0},
        "admin": {"listen": "127.0.0.1:0", **admin},
        "agents": {"default": {"type": "echo", "delay": 0.01}},
        "channels": [
            {
                "id": CHANNEL,
                "type": "dingtalk",
                "client_id": DINGTALK_CLIENT_ID,
                "client_secret": DINGTALK_CLIENT_SECRET,
                "card_template_id": DINGTALK_TEMPLATE,
                "api_base": emulator_url,
            }
        ],
    }


@pytest.fixture
async def listener(tmp_path: Path, dingtalk_emulator: EmulatorThread) -> AsyncIterator[Listener]:
    settings = validate(
        config(
            tmp_path,
            dingtalk_emulator.url,
            token=TOKEN,
            allowed_hosts=["admin.example:8443", "ops.example"],
        )
    )
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        yield Listener(daemon)
    finally:
        await daemon.stop()


def new_channel(emulator: EmulatorThread) -> bytes:
    body = {
        "id": "planted",
        "type": "dingtalk",
        "client_id": DINGTALK_CLIENT_ID,
        "client_secret": DINGTALK_CLIENT_SECRET,
        "api_base": emulator.url,
    }
    return json.dumps(body).encode()


# -- CSRF: a page on another origin posts to the loopback listener --------------------------------


async def test_a_cross_site_text_plain_post_creates_nothing(
    listener: Listener, dingtalk_emulator: EmulatorThread
) -> None:
    body = new_channel(dingtalk_emulator)
    attempts: list[tuple[list[Header], int, str]] = [
        # fetch(url, {method: "POST", mode: "no-cors", body}) from a page on another site
        (
            [("Content-Type", "text/plain;charset=UTF-8"), *CROSS_SITE],
            403,
            "cross_origin",
        ),
        # the same without the browser's provenance headers: the media type alone refuses it
        ([("Content-Type", "text/plain")], 415, "unsupported_media_type"),
        ([("Content-Type", "application/x-www-form-urlencoded")], 415, "unsupported_media_type"),
        ([("Content-Type", "multipart/form-data; boundary=x")], 415, "unsupported_media_type"),
        ([], 415, "unsupported_media_type"),  # a body with no media type at all
        ([("Content-Type", "application/json; charset=utf-16")], 415, "unsupported_media_type"),
        ([("Content-Type", "application/jsonp")], 415, "unsupported_media_type"),
        ([JSON, ("Origin", "null")], 403, "cross_origin"),  # a sandboxed frame or a file:// page
        ([JSON, ("Sec-Fetch-Site", "cross-site")], 403, "cross_origin"),
    ]
    for headers, status, code in attempts:
        answer = await listener.send("POST", "/api/v1/channels", headers, body)
        assert (answer.status, answer.error_code()) == (status, code), headers
    assert await listener.channel_ids() == [CHANNEL]

    # the page's own request: same origin, application/json
    same_origin: list[Header] = [
        ("Content-Type", "application/json; charset=UTF-8"),
        ("Origin", listener.origin),
        ("Sec-Fetch-Site", "same-origin"),
    ]
    created = await listener.send("POST", "/api/v1/channels", same_origin, body)
    assert created.status == 201, created.body
    assert await listener.channel_ids() == [CHANNEL, "planted"]


async def test_a_cross_site_disable_changes_nothing(listener: Listener) -> None:
    path = f"/api/v1/channels/{CHANNEL}/disable"
    await wait_until(lambda: listener.enabled(CHANNEL))
    attempts: list[tuple[list[Header], bytes | None, int]] = [
        # <form method="post" action=".../disable"> submitted by a page on another site
        (
            [("Content-Type", "application/x-www-form-urlencoded"), *CROSS_SITE],
            b"",
            403,
        ),
        ([("Origin", EVIL)], None, 403),
        ([("Origin", f"http://127.0.0.1:{listener.port + 1}")], None, 403),  # another local app
        ([("Origin", f"http://localhost:{listener.port}"), JSON], None, 403),  # not this Host
        ([("Sec-Fetch-Site", "cross-site")], None, 403),
        ([("Content-Type", "text/plain")], b"", 415),
        ([("Content-Type", "application/octet-stream")], b"", 415),
    ]
    for headers, body, status in attempts:
        answer = await listener.send("POST", path, headers, body)
        assert answer.status == status, (headers, answer.body)
        assert answer.content_type == "application/json"
    assert listener.enabled(CHANNEL)

    for headers in ([], [JSON, ("Origin", listener.origin), ("Sec-Fetch-Site", "same-origin")]):
        answer = await listener.send("POST", path, headers)
        assert answer.status == 200, (headers, answer.body)
        assert answer.json()["enabled"] is False
        assert (await listener.send("POST", f"/api/v1/channels/{CHANNEL}/enable", [])).status == 200


async def test_a_patch_from_a_foreign_origin_is_refused(
    listener: Listener, dingtalk_emulator: EmulatorThread
) -> None:
    created = await listener.send(
        "POST", "/api/v1/channels", [JSON], new_channel(dingtalk_emulator)
    )
    assert created.status == 201
    version = created.json()["version"]
    patch = b'{"card_update_interval": 0.5}'
    for origin in (EVIL, "null", "http://127.0.0.1", "ftp://127.0.0.1:1", "\u00e9"):
        answer = await listener.send(
            "PATCH", "/api/v1/channels/planted", [JSON, ("Origin", origin)], patch
        )
        assert (answer.status, answer.error_code()) == (403, "cross_origin"), origin
    # and no DELETE either
    answer = await listener.send("DELETE", "/api/v1/channels/planted", [("Origin", EVIL)])
    assert answer.status == 403
    shown = await listener.send("GET", "/api/v1/channels/planted", [])
    assert shown.json()["version"] == version

    answer = await listener.send(
        "PATCH", "/api/v1/channels/planted", [JSON, ("Origin", listener.origin)], patch
    )
    assert answer.status == 200, answer.body
    assert answer.json()["version"] == version + 1


# -- DNS rebinding: a foreign name that resolves to 127.0.0.1 ------------------------------------


async def test_a_rebound_name_reads_nothing(listener: Listener) -> None:
    rebound = f"evil.example:{listener.port}"
    for path in (
        "/api/v1/conversations",
        "/api/v1/channels",
        "/api/v1/openapi.json",
        "/",
        "/static/app.js",
        "/metrics",
    ):
        answer = await listener.send("GET", path, [], host=rebound)
        assert (answer.status, answer.error_code()) == (403, "host_not_allowed"), path
        assert b"channels" not in answer.body and b"conversations" not in answer.body
    # orchestrator probes answer whatever address they use; they say no more than "ok"
    for probe in ("/healthz", "/readyz"):
        assert (await listener.send("GET", probe, [], host=rebound)).status == 200

    refused: list[bytes | str] = [
        "evil.example",
        "127.0.0.1.evil.example",
        "localhost.evil.example:1",
        "0.0.0.0",  # noqa: S104 (a Host value, not a bind)
        "[::2]",
        "[::1",
        "127.0.0.1:80@evil.example",
        "127.0.0.1:0",
        "admin.example",  # allowed only with :8443
        "admin.example:9999",
        "\u0130localhost",  # non-ASCII, sent as UTF-8
        b"localhost\xff",
        b"\xe2\x80\xa8",
        " ",
    ]
    accepted = [
        "localhost",
        "LOCALHOST:1",
        "localhost.",
        "127.0.0.1",
        "127.9.8.7:65535",
        "[::1]",
        f"[::1]:{listener.port}",
        "admin.example:8443",
        "Ops.Example",
        "ops.example:1234",
    ]
    for host in refused:
        answer = await listener.send("GET", "/api/v1/channels", [], host=host)
        assert (answer.status, answer.error_code()) == (403, "host_not_allowed"), host
    for host in accepted:
        answer = await listener.send("GET", "/api/v1/channels", [], host=host)
        assert answer.status == 200, (host, answer.body)


async def test_an_allowed_host_still_needs_its_own_origin(listener: Listener) -> None:
    path = f"/api/v1/channels/{CHANNEL}/restart"
    behind_proxy = [JSON, ("Origin", "https://admin.example:8443")]  # TLS ends at the proxy
    answer = await listener.send("POST", path, behind_proxy, host="admin.example:8443")
    assert answer.status == 200, answer.body
    answer = await listener.send(
        "POST", path, [JSON, ("Origin", "https://ops.example")], host="admin.example:8443"
    )
    assert answer.status == 403


# -- bad input answers 4xx JSON, never 500 -------------------------------------------------------


async def test_hostile_bodies_and_headers_get_json_errors_not_500(listener: Listener) -> None:
    create = ("POST", "/api/v1/channels")
    patch = ("PATCH", f"/api/v1/channels/{CHANNEL}")
    deep_object = b'{"a":' * 40 + b"1" + b"}" * 40
    cases: list[tuple[tuple[str, str], list[Header], bytes, int, str]] = [
        (create, [JSON], b"[" * 100_000, 400, "bad_request"),  # RecursionError in json
        (create, [JSON], deep_object, 400, "bad_request"),
        (
            patch,
            [JSON],
            b'{"card_update_interval": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            400,
            "bad_request",
        ),
        (
            create,
            [("Content-Type", "application/json; charset=x-unknown")],
            b"{}",
            415,
            "unsupported_media_type",
        ),
        (
            create,
            [("Content-Type", "application/json; charset=latin-1")],
            b"{}",
            415,
            "unsupported_media_type",
        ),
        (
            create,
            [("Content-Type", b"application/json; charset=\xff\xfe")],
            b"{}",
            415,
            "unsupported_media_type",
        ),
        (create, [("Content-Type", b"\xc3(")], b"{}", 415, "unsupported_media_type"),
        (create, [JSON], b'{"id": "\xff\xfe"}', 400, "bad_request"),  # not UTF-8
        (create, [JSON], b'\xef\xbb\xbf{"id": "x"}', 400, "bad_request"),  # a byte-order mark
        (create, [JSON], b'{"id": "\\udcff"}', 400, "bad_request"),  # a lone surrogate escape
        (create, [JSON], b'{"id": "a\\u0000b"}', 400, "bad_request"),
        (patch, [JSON], b'{"card_update_interval": NaN}', 400, "bad_request"),
        (patch, [JSON], b'{"card_update_interval": 1e999}', 400, "bad_request"),
        (patch, [JSON], b'{"card_update_interval": ' + b"9" * 5000 + b"}", 400, "bad_request"),
        (create, [JSON], b"[]", 400, "bad_request"),
        (create, [JSON], b"", 400, "bad_request"),
        (create, [JSON], b"\x00" * 64, 400, "bad_request"),
        (create, [JSON], b"{" * 3_000_000, 413, "http_error"),  # over the 1 MiB body limit
    ]
    for (method, path), headers, body, status, code in cases:
        answer = await listener.send(method, path, headers, body)
        assert (answer.status, answer.error_code()) == (status, code), (headers, body[:40])
    # non-ASCII bytes in the header that middleware reads first
    for credentials in (
        b"Bearer \xff\xfe\xfd",
        b"\xc3(",
        "Bearer " + TOKEN + "\u00e9",
        b"bearer  \x80",
    ):
        answer = await listener.send(
            "GET", "/api/v1/channels", [("Authorization", credentials)], auth=False
        )
        assert (answer.status, answer.error_code()) == (401, "unauthorized"), credentials
    for origin in (b"http://\xff", "https://\u00e9vil.example"):
        answer = await listener.send(
            "POST", f"/api/v1/channels/{CHANNEL}/restart", [JSON, ("Origin", origin)]
        )
        assert (answer.status, answer.error_code()) == (403, "cross_origin"), origin
    assert await listener.channel_ids() == [CHANNEL]


async def test_every_response_forbids_framing_and_the_page_runs_only_its_own_files(
    listener: Listener,
) -> None:
    page = await listener.send("GET", "/", [], auth=False)
    assert page.content_type == "text/html"
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["cache-control"] == "no-store"
    for path in ("/", "/static/app.js", "/static/style.css", "/static/nothing.js"):
        answer = await listener.send("GET", path, [], auth=False)
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"], path
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
    refused = await listener.send("GET", "/", [], host="evil.example", auth=False)
    assert refused.status == 403
    for answer in (
        refused,
        await listener.send("GET", "/api/v1/channels", []),
        await listener.send("GET", "/api/v1/nothing", []),
        await listener.send("GET", "/metrics", [], auth=False),
        await listener.send("GET", "/healthz", [], auth=False),
        await listener.send("GET", "/nothing", [], auth=False),
    ):
        assert (
            answer.headers["content-security-policy"]
            == "default-src 'none'; frame-ancestors 'none'"
        )
        assert answer.headers["x-frame-options"] == "DENY"
