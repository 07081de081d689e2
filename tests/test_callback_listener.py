"""The callback listener: what it refuses before journaling anything, and what it answers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from channels.live import LiveChannel
from daemon import webhooks
from daemon.app import Daemon
from daemon.config import ConfigurationError, WebhooksSection, validate
from daemon.metrics import Metrics
from daemon.webhooks import CallbackListener
from tests.callback_support import (
    HOOK,
    HOOK_CHANNEL,
    HookPlatform,
    HookStack,
    hook_platform,
    hook_settings,
    hook_stack,
)
from tests.e2e_support import FAST_BACKOFF, wait_until
from tests.registry_support import dummy, dummy_channel

__all__ = ["dummy", "hook_platform", "hook_stack"]  # fixtures


async def journal(stack: HookStack) -> list[tuple[str, str, Any]]:
    """(platform message id, state, created_at) of every journal row, in insertion order."""
    assert stack.daemon.store is not None
    async with stack.daemon.store.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT platform_message_id, state, created_at FROM inbound_journal ORDER BY id")
        )
        return [(r[0], r[1], r[2]) for r in rows]


def said(words: str) -> str:
    """The echo agent's answer."""
    return f"You said: {words}"


def message(message_id: str, sender: str = "u1", words: str = "hello", **extra: Any) -> Any:
    return {"id": message_id, "from": sender, "text": words, **extra}


async def test_a_batch_is_journaled_in_one_transaction_then_acked_and_each_answered(
    hook_stack: HookStack, hook_platform: HookPlatform
) -> None:
    batch = [message("m1", "u1", "one"), message("m2", "u2", "two"), message("m3", "u3", "three")]
    status, body = await hook_stack.post(batch)
    assert (status, body) == (200, {"received": 3})
    rows = await journal(hook_stack)
    assert [r[0] for r in rows] == ["m1", "m2", "m3"]
    assert len({r[2] for r in rows}) == 1  # one transaction, one clock reading
    await wait_until(lambda: len(hook_platform.sent) == 3)
    assert sorted(hook_platform.sent) == [
        ("u1", said("one")),
        ("u2", said("two")),
        ("u3", said("three")),
    ]
    assert (
        hook_stack.metric(
            "channeld_callbacks_total", channel=HOOK_CHANNEL, platform=HOOK, outcome="ok", reason=""
        )
        == 1
    )
    assert (
        hook_stack.metric("channeld_callback_seconds_count", channel=HOOK_CHANNEL, platform=HOOK)
        == 1
    )


async def test_a_message_redelivered_three_times_is_answered_once(
    hook_stack: HookStack, hook_platform: HookPlatform
) -> None:
    assert (await hook_stack.post([message("m1", words="once")]))[0] == 200
    assert (await hook_stack.post([message("m1", words="once")]))[0] == 200
    # the third time inside a batch with a new message, itself twice in the same batch
    batch = [message("m1", words="once"), message("m2", "u2", "new"), message("m2", "u2", "new")]
    assert (await hook_stack.post(batch))[0] == 200
    await wait_until(lambda: len(hook_platform.sent) >= 2)
    manager = hook_stack.daemon.manager
    assert manager is not None
    await wait_until(lambda: not manager.handler.busy())
    assert [r[0] for r in await journal(hook_stack)] == ["m1", "m2"]
    assert sorted(hook_platform.sent) == [("u1", said("once")), ("u2", said("new"))]
    labels = {"channel": HOOK_CHANNEL, "platform": HOOK}
    assert hook_stack.metric("channeld_messages_duplicate_total", **labels) == 3
    assert (
        hook_stack.metric("channeld_callbacks_total", **labels, outcome="duplicate", reason="") == 1
    )
    assert hook_stack.metric("channeld_callbacks_total", **labels, outcome="ok", reason="") == 2


async def test_group_messages_without_a_mention_are_acked_and_ignored(
    hook_stack: HookStack, hook_platform: HookPlatform
) -> None:
    status, _ = await hook_stack.post([message("g1", group=True, mention=False)])
    assert status == 200
    assert await journal(hook_stack) == []
    labels = {"channel": HOOK_CHANNEL, "platform": HOOK}
    assert (
        hook_stack.metric("channeld_callbacks_total", **labels, outcome="ignored", reason="") == 1
    )
    status, _ = await hook_stack.post([message("g2", words="to the bot", group=True, mention=True)])
    assert status == 200
    await wait_until(lambda: hook_platform.sent == [("g-u1", said("to the bot"))])


@pytest.mark.parametrize(
    ("case", "expected", "reason"),
    [
        ("bad signature", 401, "signature"),
        ("not json", 400, "not_json"),
        ("deep nesting", 400, "not_json"),
        ("wrong shape", 400, "malformed"),
        ("too large", 413, "too_large"),
        ("browser", 403, "browser"),
    ],
)
async def test_refused_callbacks_journal_nothing(
    hook_stack: HookStack,
    hook_platform: HookPlatform,
    case: str,
    expected: int,
    reason: str,
) -> None:
    batch = [message("m1")]
    cases: dict[str, dict[str, Any]] = {
        "bad signature": {"signature": "forged"},
        "not json": {"raw": b"[{'id': 'm1'"},
        "deep nesting": {"raw": b"[" * 100_000 + b"]" * 100_000},
        "wrong shape": {"raw": json.dumps({"id": "m1"}).encode()},
        "too large": {"raw": json.dumps([message("m1", words="x" * 2_000_000)]).encode()},
        "browser": {"headers": {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}},
    }
    status, body = await hook_stack.post(batch, **cases[case])
    assert (status, body) == (expected, {"error": reason})
    assert await journal(hook_stack) == []
    assert hook_platform.sent == []
    assert (
        hook_stack.metric(
            "channeld_callbacks_total",
            channel=HOOK_CHANNEL,
            platform=HOOK,
            outcome="rejected",
            reason=reason,
        )
        == 1
    )


async def test_an_unknown_channel_is_404_and_mints_no_metric_series(hook_stack: HookStack) -> None:
    status, body = await hook_stack.post([message("m1")], channel="nobody")
    assert (status, body) == (404, {"error": "unknown_channel"})
    assert (
        hook_stack.metric(
            "channeld_callbacks_total",
            channel="",
            platform="",
            outcome="rejected",
            reason="unknown_channel",
        )
        == 1
    )
    assert (
        hook_stack.daemon.metrics.registry.get_sample_value(
            "channeld_callbacks_total",
            {
                "channel": "nobody",
                "platform": "",
                "outcome": "rejected",
                "reason": "unknown_channel",
            },
        )
        is None
    )


async def test_a_disabled_channel_is_404_and_enabled_again_answers(
    hook_stack: HookStack, hook_platform: HookPlatform
) -> None:
    manager = hook_stack.daemon.manager
    assert manager is not None
    assert await manager.set_enabled(HOOK_CHANNEL, False)
    assert (await hook_stack.post([message("m1")]))[0] == 404
    assert await manager.set_enabled(HOOK_CHANNEL, True)
    await wait_until(lambda: manager.states().get(HOOK_CHANNEL) == "connected")
    assert (await hook_stack.post([message("m1", words="back")]))[0] == 200
    await wait_until(lambda: hook_platform.sent == [("u1", said("back"))])


async def test_a_failed_credential_check_fails_the_channel_and_callbacks_wait(
    hook_platform: HookPlatform, tmp_path: Path
) -> None:
    hook_platform.check_fails = True
    daemon = Daemon(validate(hook_settings(tmp_path)), backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        assert daemon.manager is not None and daemon.webhooks is not None
        manager = daemon.manager
        await wait_until(lambda: manager.states().get(HOOK_CHANNEL) == "failed")
        assert "refused the credentials" in (manager.status(HOOK_CHANNEL).last_error or "")
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{daemon.webhooks.port}/hooks/{HOOK_CHANNEL}",
                json=[message("m1")],
                headers={"x-signature": "hook-secret"},
            ) as response,
        ):
            # not journaled and not acknowledged: the platform sends it again later
            assert response.status == 503
    finally:
        await daemon.stop()


async def test_the_admin_api_shows_the_webhook_url(hook_stack: HookStack) -> None:
    channels = hook_stack.daemon.channels
    assert channels is not None
    view = await channels.get(HOOK_CHANNEL)
    assert view["webhook_url"] == f"{hook_stack.url}/hooks/{HOOK_CHANNEL}"


async def test_the_public_url_names_the_webhook_url(
    hook_platform: HookPlatform, tmp_path: Path
) -> None:
    settings = validate(hook_settings(tmp_path, public_url="https://bot.example.com/im/"))
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        assert daemon.channels is not None
        view = await daemon.channels.get(HOOK_CHANNEL)
        assert view["webhook_url"] == f"https://bot.example.com/im/hooks/{HOOK_CHANNEL}"
    finally:
        await daemon.stop()


async def test_no_listener_without_a_webhook_channel_until_one_is_added(
    dummy: Any, hook_platform: HookPlatform, tmp_path: Path
) -> None:
    settings = hook_settings(tmp_path)
    settings["channels"] = [dummy_channel()]
    daemon = Daemon(validate(settings), backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        assert daemon.webhooks is not None and daemon.channels is not None
        assert not daemon.webhooks.running
        assert "webhook_url" not in await daemon.channels.get("dm-1")
        await daemon.channels.create({"id": "hk2", "type": HOOK, "secret": "s3cret-value"})
        assert daemon.webhooks.running
    finally:
        await daemon.stop()


def no_channel(_channel_id: str) -> LiveChannel | None:
    return None


def wukongim_channel(**settings: Any) -> dict[str, Any]:
    return {"id": "wk", "type": "wukongim", "bot_uid": "aibot", **settings}


def test_a_channel_whose_callbacks_carry_no_proof_needs_a_loopback_listener() -> None:
    """WuKongIM signs nothing: behind an exposed listener, its key is what proves a callback."""
    exposed = {"webhooks": {"listen": "0.0.0.0:8789"}, "agents": {"default": {"type": "echo"}}}
    with pytest.raises(ConfigurationError, match=r"'wk': webhook_key is not set.*not loopback"):
        validate({**exposed, "channels": [wukongim_channel()]})
    keyed = wukongim_channel(webhook_key="k-0123456789abcdef")
    assert validate({**exposed, "channels": [keyed]}).channels[0].id == "wk"
    loopback = {**exposed, "webhooks": {"listen": "127.0.0.1:8789"}}
    assert validate({**loopback, "channels": [wukongim_channel()]}).channels[0].id == "wk"
    # channels added through the admin API meet the same rule at the listener
    channel = validate({**loopback, "channels": [wukongim_channel()]}).channels[0]

    def listener(listen: str) -> CallbackListener:
        return CallbackListener(WebhooksSection(listen=listen), no_channel, Metrics())

    assert listener("127.0.0.1:0").refuses(channel) is None
    refusal = listener("0.0.0.0:0").refuses(channel)
    assert refusal is not None and "webhook_key" in refusal


async def test_a_body_that_does_not_arrive_in_time_is_408_and_frees_the_connection(
    hook_stack: HookStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "READ_TIMEOUT", 0.2)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(hook_stack.url.rsplit(":", 1)[1])
    )
    try:
        writer.write(
            f"POST /hooks/{HOOK_CHANNEL} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nx-signature: hook-secret\r\n"
            "Content-Length: 100\r\n\r\n[".encode()
        )
        await writer.drain()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 408")
    assert await journal(hook_stack) == []


async def test_refusals_are_all_counted_but_logged_once_per_interval(
    hook_stack: HookStack, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="daemon.webhooks"):
        for _ in range(20):
            assert (await hook_stack.post([message("m1")], signature="forged"))[0] == 401
    refused = [r for r in caplog.records if "refused (signature)" in r.getMessage()]
    assert len(refused) == 1
    assert (
        hook_stack.metric(
            "channeld_callbacks_total",
            channel=HOOK_CHANNEL,
            platform=HOOK,
            outcome="rejected",
            reason="signature",
        )
        == 20
    )
