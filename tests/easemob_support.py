"""Easemob test helpers: a loopback callback receiver and the emulator started against it.

Names other test modules rely on (keep them stable):
* `CallbackReceiver`: an aiohttp server on 127.0.0.1:0 standing where the daemon's callback
  listener would (`/hooks/{channel_id}`); records every POST (`Received`: path, headers, JSON
  body, the status it gave, whether it was a pre-send callback) and answers pre-send callbacks
  with `presend_answers` (then `{"valid": true}`), post-send ones with `post_statuses` (then
  200). `hold(gate)` keeps the next pre-send answer until the test sets `gate`.
  `await receiver.wait_for(n)` returns once n POSTs arrived.
* `started(receiver, **options)`: an async context manager yielding an `EasemobEmulatorThread`
  whose callbacks go to `receiver.url()` (None: nowhere), with the test credentials below.
* `BOT`, `ORG`, `APP`, `APPKEY`, `CLIENT_ID`, `CLIENT_SECRET`, `CALLBACK_SECRET`: those
  credentials; `signed(body)`: a callback's `security` checked independently of the emulator.

Typical use from a test's loop:
    async with CallbackReceiver() as receiver, started(receiver) as emulator:
        sent = await emulator.send_user_message(BOT, from_user="u1", text="hi")
        pre, post = await receiver.wait_for(2)
        assert pre.presend and post.body["msg_id"] == sent.msg_id
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from channels.easemob.emulator import EasemobEmulatorThread
from tests.receiver_support import HookReceiver

BOT = "aibot"
ORG = "testorg"
APP = "testapp"
APPKEY = f"{ORG}#{APP}"
CLIENT_ID = "YXA6test-client"
CLIENT_SECRET = "YXA6test-secret"
CALLBACK_SECRET = "test-callback-secret"

__all__ = [
    "APP",
    "APPKEY",
    "BOT",
    "CALLBACK_SECRET",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "ORG",
    "CallbackReceiver",
    "PresendAnswer",
    "Received",
    "signed",
    "started",
]


def signed(body: dict[str, Any], secret: str = CALLBACK_SECRET) -> bool:
    """The callback's `security` is md5(callId + secret + timestamp)."""
    text = f"{body['callId']}{secret}{body['timestamp']}"
    expected = hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - the platform's own scheme
    return bool(body["security"] == expected)


@dataclass(frozen=True, slots=True)
class PresendAnswer:
    """How the receiver answers one pre-send callback."""

    status: int = 200
    body: Any = None  # JSON; None: {"valid": true}
    gate: asyncio.Event | None = None  # held until set


@dataclass(frozen=True, slots=True)
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int  # what the receiver answered
    presend: bool  # no `eventType` and not an edit event: a pre-send callback


class CallbackReceiver(HookReceiver[Received]):
    """A loopback callback endpoint answering scripted verdicts and statuses."""

    def __init__(
        self, presend_answers: Iterable[PresendAnswer] = (), post_statuses: Iterable[int] = ()
    ) -> None:
        super().__init__(post_statuses, channel_id="em-main")
        self.presend_answers: deque[PresendAnswer] = deque(presend_answers)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for answer in self.presend_answers:
            if answer.gate is not None:
                answer.gate.set()
        await super().__aexit__(exc_type, exc, tb)

    def hold(self, gate: asyncio.Event, body: Any = None) -> None:
        """The next pre-send answer waits until `gate` is set."""
        self.presend_answers.append(PresendAnswer(body=body, gate=gate))

    async def answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        presend = "eventType" not in body and body.get("chat_type") != "edit"
        reply: web.StreamResponse
        if presend:
            answer = self.presend_answers.popleft() if self.presend_answers else PresendAnswer()
            status = answer.status
            reply = web.json_response(
                {"valid": True} if answer.body is None else answer.body, status=status
            )
        else:
            answer = PresendAnswer()
            status = self.next_status()
            reply = web.Response(status=status)
        self.record(Received(request.path, dict(request.headers), body, status, presend))
        if answer.gate is not None:
            await answer.gate.wait()
        return reply


@asynccontextmanager
async def started(
    receiver: CallbackReceiver | None, **options: Any
) -> AsyncIterator[EasemobEmulatorThread]:
    """An emulator for the test app whose callbacks go to `receiver` (None: nowhere)."""
    settings = {
        "org": ORG,
        "app": APP,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "callback_secret": CALLBACK_SECRET,
        "callback": receiver.url() if receiver else "",
        **options,
    }
    async with EasemobEmulatorThread(**settings) as emulator:
        yield emulator
