"""Async client of a WuKongIM server's HTTP API: the version probe, messages, message events.

The API takes one fixed credential, the server's `managerToken`, in a `token` header, or none
when the server has none configured (docs/platforms/wukongim.md §2). Every failure becomes one
of `common.errors`; texts never carry the token.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Unpack

from channels.http import MAX_PLATFORM_MESSAGE, Answer, HttpOptions, PlatformApi
from common.errors import (
    AuthError,
    ChannelError,
    PermanentError,
    RateLimited,
    TransientError,
)
from common.retry_after import retry_after

TEXT = 1  # the payload `type` of a text message
EVENT_API_SINCE = (2, 2, 4)  # /message/event and `is_stream` appeared in v2.2.4 (§4.1)
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(version: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a `/varz` version such as `v2.2.5-20260422`; None when
    unreadable (a build that set none)."""
    match = _VERSION.match(version.strip())
    return (int(match[1]), int(match[2]), int(match[3] or 0)) if match else None


def text_payload(text: str) -> str:
    """A text message's payload as the API takes it: base64 of `{"type":1,"content":...}`."""
    body = json.dumps({"type": TEXT, "content": text}, ensure_ascii=False)
    return base64.b64encode(body.encode()).decode()


@dataclass(frozen=True, slots=True)
class Sent:
    """What `/message/send` answered: the server's message id and the client_msg_no it kept."""

    message_id: str
    client_msg_no: str


def _message(payload: Any) -> str:
    """The `msg` of an error answer (`{"msg": ..., "status": 400}`), shortened."""
    if not isinstance(payload, dict):
        return ""
    return str(payload.get("msg") or "")[:MAX_PLATFORM_MESSAGE]


def _data(payload: Any) -> dict[str, Any]:
    """The answer's data: under `data` in the server's code, flat in the documentation (§3)."""
    if not isinstance(payload, dict):
        return {}
    data = payload.get("data")
    return data if isinstance(data, dict) else payload


class WuKongIMApi(PlatformApi):
    """One server's API as one bot uses it; a channel shares one for all calls."""

    platform = "wukongim"
    token_margin = 0.0  # the managerToken never expires

    def __init__(
        self,
        *,
        token: str,
        api_base: str,
        bot_uid: str,
        wall_clock: Callable[[], float] = time.time,
        **options: Unpack[HttpOptions],
    ) -> None:
        super().__init__(app_id=bot_uid, app_secret=token, base_url=api_base, **options)
        self.bot_uid = bot_uid
        self._wall_clock = wall_clock

    # -- plumbing ----------------------------------------------------------------------------------

    async def _fetch_token(self) -> tuple[str, float]:
        return self._secret, math.inf

    def _token_headers(self, token: str) -> dict[str, str]:
        return {"token": token} if token else {}

    def _token_rejected(self, answer: Answer) -> bool:
        return False  # a fixed token that was refused is wrong, not stale

    def _error(self, name: str, answer: Answer) -> ChannelError:
        status = answer.status
        detail = self._status_text(name, status, "", _message(answer.payload))
        if status == 401:
            # the server answers 401 with an empty body; say what to fix
            hint = "refused the token" if self._secret else "requires a token"
            return AuthError(f"{detail} (the server {hint}: set token to its managerToken)")
        if status == 403:
            return AuthError(detail)
        if status == 429:
            return RateLimited(detail, retry_after(answer.headers))
        if status >= 500 or status == 408:
            return TransientError(detail)
        if 400 <= status < 500:
            return PermanentError(detail)  # 400 {"msg": ...}: the request itself was refused
        return TransientError(detail)  # 1xx/3xx: nothing we asked for

    async def _call(self, name: str, method: str, path: str, body: Any = None) -> Any:
        answer = await self._send(name, method, self._base + path, body=body, authorized=True)
        if not answer.ok:
            raise self._error(name, answer)
        return answer.payload

    # -- calls -------------------------------------------------------------------------------------

    async def varz(self) -> str:
        """The server's version (`""` when its build did not set one); proves the token."""
        name = "varz"
        payload = await self._call(name, "GET", "/varz")
        if not isinstance(payload, dict) or "version" not in payload:
            raise TransientError(self._text(name, "the answer is not a WuKongIM /varz"))
        return str(payload.get("version") or "")

    async def send_message(
        self,
        channel_id: str,
        channel_type: int,
        text: str,
        client_msg_no: str,
        *,
        stream: bool = False,
    ) -> Sent:
        """Posts a text message as the bot; `stream` makes it the anchor of an event stream."""
        body = {
            "header": {"no_persist": 0, "red_dot": 1, "sync_once": 0},
            "client_msg_no": client_msg_no,
            "is_stream": int(stream),
            "from_uid": self.bot_uid,
            "channel_id": channel_id,
            "channel_type": channel_type,
            "payload": text_payload(text),
        }
        data = _data(await self._call("message.send", "POST", "/message/send", body))
        message_id = data.get("message_id")
        return Sent(
            message_id=str(message_id) if isinstance(message_id, int | str) else "",
            client_msg_no=str(data.get("client_msg_no") or client_msg_no),
        )

    async def send_event(
        self,
        channel_id: str,
        channel_type: int,
        client_msg_no: str,
        event_id: str,
        event_type: str,
        *,
        event_key: str = "",
        payload: dict[str, Any] | None = None,
    ) -> None:
        """Appends one event to the stream anchored by `client_msg_no`."""
        body: dict[str, Any] = {
            "channel_id": channel_id,
            "channel_type": channel_type,
            "from_uid": self.bot_uid,
            "client_msg_no": client_msg_no,
            "event_id": event_id,
            "event_type": event_type,
            "visibility": "public",
            "occurred_at": int(self._wall_clock() * 1000),
        }
        if event_key:
            body["event_key"] = event_key
        if payload is not None:
            body["payload"] = payload
        await self._call(event_type, "POST", "/message/event", body)

    async def event_sync(
        self, channel_id: str, channel_type: int, client_msg_no: str
    ) -> list[dict[str, Any]]:
        """The stored events of a stream: the last state of each of its event keys."""
        body = {
            "channel_id": channel_id,
            "channel_type": channel_type,
            "from_uid": self.bot_uid,
            "client_msg_no": client_msg_no,
            "from_msg_event_seq": 0,
            "limit": 100,
        }
        events = _data(await self._call("event.sync", "POST", "/message/eventsync", body)).get(
            "events"
        )
        return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []
