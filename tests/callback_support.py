"""A webhook platform that exists only in tests: the callback listener's contract, end to end.

Its provider is a real `SessionProvider` over a `CallbackSession`, like a webhook platform's: a
callback carries `x-signature: <secret>` and a JSON array of `{"id", "from", "text"}` (with
`"group": true` and `"mention": true` for group messages); answers go to a recorded list.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest

from channels import registry
from channels.callbacks import (
    BatchSink,
    Callback,
    CallbackAnswer,
    CallbackMalformed,
    CallbackRejected,
    CallbackSession,
)
from channels.cards import CardReplyStream, MessageSender
from channels.config import ChannelConfigBase, NonEmptySecret
from channels.model import ChannelId, ChatType, InboundMessage, Sender
from channels.observer import Observer
from channels.platform import Platform
from channels.provider import ChannelProvider, InboundSink
from channels.sessions import SessionProvider
from common.errors import AuthError
from daemon.app import Daemon
from daemon.config import validate
from tests.e2e_support import FAST_BACKOFF, wait_until

HOOK = "hooktest"
HOOK_CHANNEL = "hk"
HOOK_SECRET = "hook-secret"


class HookChannelConfig(ChannelConfigBase):
    """A test webhook platform: its callbacks carry the secret as their signature."""

    type: Literal["hooktest"] = "hooktest"
    secret: NonEmptySecret


@dataclass
class HookPlatform:
    """The registered test platform: what its providers sent, and how their check behaves."""

    sent: list[tuple[str, str]] = field(default_factory=list)  # (chat id, text)
    check_fails: bool = False

    def provider(
        self, config: HookChannelConfig, sink: InboundSink, observer: Observer
    ) -> ChannelProvider:
        return HookProvider(config, sink, observer=observer, platform=self)

    @property
    def platform(self) -> Platform[HookChannelConfig]:
        return Platform(
            name=HOOK,
            title="Hook",
            config=HookChannelConfig,
            provider=self.provider,
            callbacks=True,
        )


class _NoApi:
    async def close(self) -> None:
        """Nothing to close."""


class _Sender:
    limit = 10_000

    def __init__(self, platform: HookPlatform) -> None:
        self._platform = platform

    def measure(self, text: str) -> int:
        return len(text)

    async def send(self, message: InboundMessage, text: str, purpose: str) -> None:
        self._platform.sent.append((message.chat_id, text))


class _MessagesOnly(CardReplyStream):
    async def _create_card(self) -> str | None:
        return None

    async def _show(self, text: str) -> None:
        raise AssertionError("no card")

    async def _end_card(self, text: str, *, failed: bool) -> None:
        raise AssertionError("no card")


class HookProvider(SessionProvider[HookChannelConfig, _NoApi, CallbackSession]):
    """The test platform's provider."""

    platform = HOOK

    def __init__(
        self,
        config: HookChannelConfig,
        sink: InboundSink,
        *,
        observer: Observer | None = None,
        platform: HookPlatform,
    ) -> None:
        self._recorder = platform
        super().__init__(config, sink, observer=observer)

    def _new_api(self) -> _NoApi:
        return _NoApi()

    def _new_sender(self, api: _NoApi) -> MessageSender:
        return _Sender(self._recorder)

    async def _new_session(self) -> CallbackSession:
        return CallbackSession(self._check, self._log)

    async def _check(self) -> None:
        if self._recorder.check_fails:
            raise AuthError("the platform refused the credentials (HTTP 401)")

    def _new_reply(self, message: InboundMessage) -> CardReplyStream:
        return _MessagesOnly(self._sender, message)

    async def handle_callback(self, callback: Callback, deliver: BatchSink) -> CallbackAnswer:
        if callback.headers.get("x-signature") != self._config.secret.get_secret_value():
            raise CallbackRejected("signature", "the signature does not match")
        if not isinstance(callback.payload, list):
            raise CallbackMalformed("expected a JSON array")
        messages = [self._convert(item) for item in callback.payload]
        intake = await deliver(messages)
        return CallbackAnswer(body={"received": len(messages)}, intake=intake)

    def _convert(self, item: Any) -> InboundMessage:
        group = bool(item.get("group"))
        return InboundMessage(
            channel_id=ChannelId(self._config.id),
            platform=HOOK,
            message_id=str(item["id"]),
            chat_id=f"g-{item['from']}" if group else str(item["from"]),
            chat_type=ChatType.GROUP if group else ChatType.DIRECT,
            sender=Sender(str(item["from"])),
            text=str(item["text"]),
            received_at=datetime.now(UTC),
            bot_mentioned=bool(item.get("mention")),
        )


@pytest.fixture
def hook_platform() -> Iterator[HookPlatform]:
    """The test webhook platform, registered for one test."""
    recorder = HookPlatform()
    registry.register(recorder.platform)
    try:
        yield recorder
    finally:
        registry.unregister(HOOK)


def hook_settings(tmp_path: Path, **webhooks: Any) -> dict[str, Any]:
    """A daemon with one test webhook channel answering by echo, listeners on port 0."""
    return {
        "daemon": {"state_dir": str(tmp_path), "graceful_timeout": 0},
        "admin": {"listen": "127.0.0.1:0"},
        "webhooks": {"listen": "127.0.0.1:0", **webhooks},
        "agents": {"default": {"type": "echo", "delay": 0.0}},
        "channels": [{"id": HOOK_CHANNEL, "type": HOOK, "secret": HOOK_SECRET}],
    }


@dataclass
class HookStack:
    """A running daemon with the test webhook channel, and an HTTP client for its listener."""

    daemon: Daemon
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        assert self.daemon.webhooks is not None and self.daemon.webhooks.port is not None
        return f"http://127.0.0.1:{self.daemon.webhooks.port}"

    async def post(
        self,
        body: Any,
        *,
        channel: str = HOOK_CHANNEL,
        signature: str = HOOK_SECRET,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        """POST a callback; its status and JSON answer (None when empty)."""
        sent_headers = {"x-signature": signature, "Content-Type": "application/json"}
        sent_headers.update(headers or {})
        data = io.BytesIO(raw) if raw is not None else aiohttp.JsonPayload(body)
        async with self.http.post(
            f"{self.url}/hooks/{channel}", data=data, headers=sent_headers
        ) as response:
            text = await response.text()
            return response.status, (await response.json() if text else None)

    def metric(self, name: str, **labels: str) -> float:
        value = self.daemon.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
async def hook_stack(hook_platform: HookPlatform, tmp_path: Path) -> AsyncIterator[HookStack]:
    """The daemon serving the test webhook channel, connected."""
    daemon = Daemon(validate(hook_settings(tmp_path)), backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        assert daemon.manager is not None
        manager = daemon.manager
        await wait_until(lambda: manager.states().get(HOOK_CHANNEL) == "connected")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            yield HookStack(daemon, http)
    finally:
        await daemon.stop()
