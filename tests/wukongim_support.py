"""WuKongIM test helpers: a loopback webhook receiver and the emulator started against it.

Names other test modules rely on (keep them stable):
* `WebhookReceiver`: an aiohttp server on 127.0.0.1:0 standing where the daemon's callback
  listener would; records every POST (raw path and query, parsed JSON body, the status it gave)
  and answers the statuses it was scripted with (then `default_status`, 200).
  `await receiver.wait_for(n)` returns once n POSTs arrived, `await receiver.messages(n)` once
  n messages did, in whatever batches.
* `started(receiver, **options)`: an async context manager yielding a `WuKongIMEmulatorThread`
  that pushes to `receiver.url()` with `FAST` timings unless `options` say otherwise.
* `FAST`: push every 50 ms, pause 50 ms after a failed push.
* `attempts(emulator, n)`: the emulator's first n webhook pushes, once it recorded them (the
  receiver sees a POST a moment before the emulator has read its answer).
* `BOT`, `b64_text(text)`, `decoded(message)`: the default bot uid, a text payload as
  `/message/send` takes it, and a webhook message's payload as JSON.

Typical use from a test's loop:
    async with WebhookReceiver() as receiver, started(receiver) as emulator:
        sent = await emulator.send_user_message(BOT, from_uid="u1", text="hi")
        (post,) = await receiver.wait_for(1)
        assert post.body[0]["message_idstr"] == sent.message_id
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from channels.wukongim.emulator import WuKongIMEmulator, WuKongIMEmulatorThread
from channels.wukongim.emulator.webhook import PushAttempt
from tests.receiver_support import HookReceiver

BOT = "aibot"
FAST: dict[str, Any] = {"push_interval": 0.05, "retry_pause": 0.05}

__all__ = [
    "BOT",
    "FAST",
    "Received",
    "WebhookReceiver",
    "attempts",
    "b64_text",
    "decoded",
    "started",
]


def b64_text(text: str) -> str:
    """A text message payload, base64 as `/message/send` wants it."""
    return base64.b64encode(json.dumps({"type": 1, "content": text}).encode()).decode()


def decoded(message: dict[str, Any]) -> Any:
    """A webhook message's payload as JSON."""
    return json.loads(base64.b64decode(message["payload"]))


@dataclass(frozen=True, slots=True)
class Received:
    """One POST the receiver got."""

    path_qs: str  # exactly as requested
    query: dict[str, str]  # as a query parser reads it
    headers: dict[str, str]
    body: Any  # the JSON body (json.loads keeps 64-bit ids exact)
    status: int  # what the receiver answered


class WebhookReceiver(HookReceiver[Received]):
    """A loopback webhook endpoint answering scripted statuses."""

    def __init__(self, statuses: Iterable[int] = ()) -> None:
        super().__init__(statuses, channel_id="wk-main")

    def url(self, channel_id: str | None = None, key: str | None = None) -> str:
        """The webhook address to configure (`?key=` when given)."""
        return super().url(channel_id) + (f"?key={key}" if key else "")

    async def received_from(self, request: web.Request, status: int) -> Received:
        body = await request.json()
        return Received(request.path_qs, dict(request.query), dict(request.headers), body, status)

    async def messages(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The first `count` messages, whatever batches they came in."""
        await self.until(lambda received: sum(len(r.body) for r in received) >= count, timeout)
        return [m for r in self.received for m in r.body][:count]


@asynccontextmanager
async def started(
    receiver: WebhookReceiver | None, **options: Any
) -> AsyncIterator[WuKongIMEmulatorThread]:
    """An emulator pushing to `receiver` (None: to nowhere), on its own thread."""
    settings = {**FAST, "webhook": receiver.url() if receiver else "", **options}
    async with WuKongIMEmulatorThread(**settings) as emulator:
        yield emulator


async def attempts(
    emulator: WuKongIMEmulatorThread, count: int, timeout: float = 5.0
) -> list[PushAttempt]:
    """The first `count` webhook pushes, once the emulator has recorded their answers."""

    def recorded(e: WuKongIMEmulator) -> list[PushAttempt] | None:
        pushes = e.pushes()
        return pushes[:count] if len(pushes) >= count else None

    return await emulator.wait_for(recorded, timeout) or []
