"""ZIM test helpers: a loopback callback receiver, a signed API client and the emulator started
against them.

Names other test modules rely on (keep them stable):
* `CallbackReceiver`: an aiohttp server on 127.0.0.1:0 standing where the daemon's callback
  listener would; records every POST (parsed JSON body, the status it gave) and answers the
  statuses it was scripted with (then `default_status`, 200). `await receiver.wait_for(n)`
  returns the first n POSTs once they arrived.
* `started(receiver, **options)`: an async context manager yielding a `ZimEmulatorThread` that
  calls back `receiver.url()` with `FAST` retries unless `options` say otherwise.
* `ZimApi(http, base)`: signs and posts server API calls (`await api.call("SendPeerMessage",
  body)` returns the answer's JSON); `api.send(text)` / `api.edit(seq, text)` / `api.register()`
  as the robot; keyword overrides forge the public parameters.
* `FakeClock`: a clock a test moves by hand (`clock.now += 1.5`), for the rate window, the edit
  window and settling.
* `APP_ID`, `SECRET`, `ROBOT`, `USER`: the emulator's defaults and the user tests write as.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from channels.zim.emulator import ZimEmulatorThread
from channels.zim.emulator.server import DEFAULT_APP_ID, DEFAULT_ROBOTS, DEFAULT_SECRET
from channels.zim.emulator.signing import api_signature
from tests.receiver_support import HookReceiver

APP_ID = DEFAULT_APP_ID
SECRET = DEFAULT_SECRET
ROBOT = str(DEFAULT_ROBOTS[0])
USER = "user_1"
FAST: dict[str, Any] = {"retry_scale": 0.01, "callback_timeout": 2.0}

__all__ = [
    "APP_ID",
    "FAST",
    "ROBOT",
    "SECRET",
    "USER",
    "CallbackReceiver",
    "FakeClock",
    "Received",
    "ZimApi",
    "started",
]


class FakeClock:
    """A monotonic clock moved by hand; read from the emulator's thread."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True, slots=True)
class Received:
    """One POST the receiver got."""

    at: float  # time.monotonic() on arrival
    path: str
    body: Any
    status: int  # what the receiver answered


class CallbackReceiver(HookReceiver[Received]):
    """A loopback callback endpoint answering scripted statuses."""

    def __init__(self, statuses: Iterable[int] = ()) -> None:
        super().__init__(statuses, channel_id="zim-main")

    async def received_from(self, request: web.Request, status: int) -> Received:
        body = await request.json()
        return Received(time.monotonic(), request.path, body, status)


class ZimApi:
    """A signed client of the emulator's server API."""

    def __init__(
        self, http: aiohttp.ClientSession, base: str, secret: str = SECRET, robot: str = ROBOT
    ) -> None:
        self.http = http
        self.base = base
        self.secret = secret
        self.robot = robot

    def query(self, action: str, **overrides: str) -> dict[str, str]:
        """The public parameters, signed; `overrides` replace any of them after signing."""
        nonce = overrides.get("SignatureNonce", secrets.token_hex(8))
        timestamp = overrides.get("Timestamp", str(int(time.time())))
        app_id = overrides.get("AppId", APP_ID)
        query = {
            "Action": action,
            "AppId": app_id,
            "SignatureNonce": nonce,
            "Timestamp": timestamp,
            "Signature": api_signature(app_id, nonce, self.secret, timestamp),
            "SignatureVersion": "2.0",
        }
        return {**query, **overrides}

    async def call(self, action: str, body: Any = None, **overrides: str) -> dict[str, Any]:
        """Posts one action; the answer's JSON (asserting HTTP 200, as ZIM always answers)."""
        async with self.http.post(
            self.base + "/", params=self.query(action, **overrides), json=body or {}
        ) as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
            return answer

    async def register(self, *robots: str, name: str = "Assistant") -> dict[str, Any]:
        """RobotRegister for `robots` (default: this client's robot)."""
        infos = [{"UserId": r, "UserName": name} for r in robots or (self.robot,)]
        return await self.call("RobotRegister", {"UserInfo": infos})

    async def send(self, text: str, to: str = USER, **fields: Any) -> dict[str, Any]:
        """SendPeerMessage from the robot."""
        body = {
            "FromUserId": self.robot,
            "ToUserId": [to],
            "MessageType": 1,
            "Priority": 2,
            "MessageBody": {"Message": text},
            **fields,
        }
        return await self.call("SendPeerMessage", body)

    async def edit(self, seq: int, text: str, to: str = USER, **fields: Any) -> dict[str, Any]:
        """EditC2cMsgBody of the robot's message `seq` to `to`."""
        body = {
            "FromUserId": self.robot,
            "SenderId": self.robot,
            "ConvId": to,
            "MsgType": 1,
            "ConvMsgSeq": seq,
            "EditType": 1,
            "MessageBody": {"Message": text},
            **fields,
        }
        return await self.call("EditC2cMsgBody", body)


@asynccontextmanager
async def started(
    receiver: CallbackReceiver | None, **options: Any
) -> AsyncIterator[ZimEmulatorThread]:
    """An emulator calling back `receiver` (None: nowhere), on its own thread."""
    settings = {**FAST, "callback": receiver.url() if receiver else "", **options}
    async with ZimEmulatorThread(**settings) as emulator:
        yield emulator
