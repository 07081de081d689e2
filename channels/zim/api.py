"""Async client of ZIM's server API: robot registration, one-to-one messages and their edits.

Every call is `POST {api_base}/?Action=...` signed with `md5(AppId + SignatureNonce +
ServerSecret + Timestamp)` and a fresh nonce (docs/platforms/zim.md §2). ZIM answers business
errors with HTTP 200 and a non-zero `Code`: those are errors too, classified by the code. All
calls of the app share ZIM's 20 requests per second, counted in a sliding second, so every call
first takes a token from one bucket below that rate. Texts never carry the secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Unpack

from channels.http import HttpOptions
from channels.ratelimit import TokenBucket
from channels.zego_signing import SIGNATURE_EXPIRED, ZegoServerApi

# re-exported: the tests sign with it from here
from channels.zego_signing import api_signature as api_signature  # noqa: PLC0414
from common.errors import (
    RateLimited,
    TransientError,
)

TEXT = 1  # MessageType of a text message
PRIORITY_MEDIUM = 2
EDIT_TEXT = 1  # EditType bit: the message's text
ROBOT_EXISTS = 660700002  # RobotRegister: "Bot already exists", which is what we wanted


@dataclass(frozen=True, slots=True)
class Sent:
    """A one-to-one message the server took: its MsgId and the MsgSeq that edits name."""

    msg_id: str
    msg_seq: int


def _code(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _entries(payload: Any, key: str) -> list[dict[str, Any]]:
    items = payload.get(key) if isinstance(payload, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


class ZimApi(ZegoServerApi):
    """One ZIM app's server API as one robot uses it; a channel shares one for all calls."""

    platform = "zim"
    transient_codes = frozenset({1, SIGNATURE_EXPIRED, 660000001})  # busy, server trouble
    rate_codes = frozenset({7, 660300005, 660700001})
    # 3 "authentication failed", 100000005 "signature error", 100000010 an AppId the gateway has
    # no ServerSecret for
    auth_codes = frozenset({3, 100000005, 100000010})

    def __init__(
        self,
        *,
        app_id: int,
        server_secret: str,
        api_base: str,
        robot_id: str,
        requests_per_second: float = 15.0,
        wall_clock: Callable[[], float] = time.time,
        **options: Unpack[HttpOptions],
    ) -> None:
        super().__init__(
            app_id=app_id,
            server_secret=server_secret,
            api_base=api_base,
            wall_clock=wall_clock,
            **options,
        )
        self.robot_id = robot_id
        # a burst of one: at most rate + 1 calls fall in any second, whichever second ZIM counts
        self.bucket = TokenBucket(requests_per_second, 1)

    # -- plumbing ----------------------------------------------------------------------------------

    async def _call(
        self, action: str, body: dict[str, Any], *, accept: frozenset[int] = frozenset()
    ) -> dict[str, Any]:
        """One signed call, after a token from the app's bucket; the answer when its `Code` is 0
        or one of `accept`."""
        await self.bucket.acquire()
        url = self._base + "/"
        answer = await self._send(action, "POST", url, body=body, params=self._signed_query(action))
        code = _code(answer.get("Code"))
        if not answer.ok:
            error = self._http_error(action, answer)
        elif code is None:
            error = TransientError(self._text(action, "the answer is not ZIM's JSON"))
        elif code == 0 or code in accept:
            return dict(answer.payload)
        else:
            error = self._business_error(action, code, str(answer.get("Message") or ""))
        if isinstance(error, RateLimited):
            self.bucket.penalize(error.retry_after)
        raise error

    # -- calls -------------------------------------------------------------------------------------

    async def register_robot(self, name: str, avatar: str) -> bool:
        """`RobotRegister` for this robot; False when it existed already (in either form ZIM
        says so: `Code` 660700002, or `Code` 0 with that SubCode in `ErrorList`)."""
        action = "RobotRegister"
        info = {"UserId": self.robot_id, "UserName": name}
        if avatar:
            info["UserAvatar"] = avatar
        payload = await self._call(action, {"UserInfo": [info]}, accept=frozenset({ROBOT_EXISTS}))
        if payload.get("Code") == ROBOT_EXISTS:
            return False
        for entry in _entries(payload, "ErrorList"):
            if entry.get("UserId") != self.robot_id:
                continue
            code = _code(entry.get("SubCode"))
            if code == ROBOT_EXISTS:
                return False
            raise self._business_error(action, code or -1, str(entry.get("SubMessage") or ""))
        return True

    async def send_peer(self, to_user: str, text: str) -> Sent:
        """`SendPeerMessage`: a text from the robot to one user."""
        action = "SendPeerMessage"
        body = {
            "FromUserId": self.robot_id,
            "ToUserId": [to_user],
            "MessageType": TEXT,
            "Priority": PRIORITY_MEDIUM,
            "MessageBody": {"Message": text},
        }
        payload = await self._call(action, body)
        for entry in _entries(payload, "ErrorList"):
            if entry.get("UserId") == to_user:
                code = _code(entry.get("SubCode")) or -1
                raise self._business_error(action, code, str(entry.get("SubMessage") or ""))
        for entry in _entries(payload, "SuccList"):
            seq = _code(entry.get("MsgSeq"))
            if entry.get("UserId") == to_user and seq is not None:
                return Sent(msg_id=str(entry.get("MsgId") or ""), msg_seq=seq)
        raise TransientError(self._text(action, "the answer names no MsgSeq for the user"))

    async def edit_peer(self, user: str, msg_seq: int, text: str) -> None:
        """`EditC2cMsgBody`: the robot's message `msg_seq` to `user` now says `text`."""
        body = {
            "FromUserId": self.robot_id,
            "SenderId": self.robot_id,
            "ConvId": user,
            "MsgType": TEXT,
            "ConvMsgSeq": msg_seq,
            "EditType": EDIT_TEXT,
            "MessageBody": {"Message": text},
        }
        await self._call("EditC2cMsgBody", body)
