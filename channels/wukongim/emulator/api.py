"""The emulator's HTTP API on one port, as WuKongIM v2.2.5's gin server answers it
(internal/api/server_http.go, message.go, user.go, varz.go).

* With a manager token every route wants the `token` header: missing or wrong is HTTP 401 with
  an empty body, before routing (an unknown path is 401 too, not 404).
* Errors are HTTP 400 `{"msg","status":400}`; unknown routes and methods 404
  `404 page not found` (gin does not answer 405).
* `/message/event`, `/message/eventsync` and `is_stream` exist from v2.2.4 on; with an older
  `version` the routes answer 404 and an anchor is a plain message (v2.2.0 to v2.2.3 streamed
  with `/stream/open`, which the emulator does not model).
* Request fields follow Go's JSON decoding: `[]byte` fields are standard base64 strings, numbers
  must be integers of their field's width, a missing field is its zero value.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from channels.emulator import http
from channels.emulator.control import CONTROL_PREFIX
from channels.wukongim.emulator.history import event_sync
from channels.wukongim.emulator.messaging import Messaging
from channels.wukongim.emulator.payloads import go_json, message_resp, varz
from channels.wukongim.emulator.state import (
    PERSON,
    SYSTEM_UID,
    EmulatorState,
    bad_request,
    fake_channel_id,
    is_special,
)
from channels.wukongim.emulator.streams import EventError, EventRequest, EventStore

EVENT_API_SINCE = (2, 2, 4)
UINT8, UINT32, INT64 = (0, 255), (0, 2**32 - 1), (-(2**63), 2**63 - 1)


def event_api(version: str) -> bool:
    """The server has the message event stream (`v2.2.4-20260313` on); a build without a
    version (the server's is set at build time) is taken for the current code."""
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version)
    if found is None:
        return True
    return (int(found[1]), int(found[2]), int(found[3])) >= EVENT_API_SINCE


def ok(data: Any = None) -> web.Response:
    """`ResponseOK` / `ResponseOKWithData` (gin.H is a map: Go writes its keys sorted)."""
    body = {"status": 200} if data is None else {"data": data, "status": 200}
    return json_response(body)


def json_response(body: Any, status: int = 200) -> web.Response:
    """`c.JSON`: compact JSON."""
    return web.Response(
        body=go_json(body), status=status, content_type="application/json", charset="utf-8"
    )


def token_middleware(token: str | None) -> Middleware:
    """The manager-token check in front of every route (not the control plane), and gin's
    plain 404 for what no route serves."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        if token and request.headers.get("token") != token:
            return web.Response(status=401)
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return web.Response(status=404, text="404 page not found")

    return middleware


class Fields:
    """A JSON object read the way Go decodes it into a struct."""

    def __init__(self, body: Mapping[str, Any], struct: str) -> None:
        self._body = body
        self._struct = struct

    def _wrong(self, name: str, value: Any, go_type: str) -> http.ApiError[int]:
        kind = {bool: "bool", str: "string", list: "array", dict: "object"}.get(
            type(value), "number"
        )
        return bad_request(
            f"json: cannot unmarshal {kind} into Go struct field {self._struct}.{name} "
            f"of type {go_type}"
        )

    def text(self, name: str) -> str:
        """A string field."""
        value = self._body.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self._wrong(name, value, "string")
        return value

    def number(self, name: str, bounds: tuple[int, int] = INT64, go_type: str = "int") -> int:
        """An integer field within `bounds`."""
        value = self._body.get(name)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(name, value, go_type)
        if value != int(value) or not bounds[0] <= value <= bounds[1]:
            raise bad_request(
                f"json: cannot unmarshal number {value} into Go struct field "
                f"{self._struct}.{name} of type {go_type}"
            )
        return int(value)

    def data(self, name: str) -> bytes:
        """A `[]byte` field: a standard base64 string."""
        value = self._body.get(name)
        if value is None:
            return b""
        if not isinstance(value, str):
            raise self._wrong(name, value, "[]uint8")
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise bad_request(f"illegal base64 data: {exc}") from exc

    def struct(self, name: str) -> Fields:
        """A nested struct."""
        value = self._body.get(name)
        if value is not None and not isinstance(value, dict):
            raise self._wrong(name, value, "struct")
        return Fields(value or {}, f"{self._struct}.{name}")

    def raw(self, name: str) -> bytes:
        """A `json.RawMessage` field: the value's JSON, b"" when absent."""
        return go_json(self._body[name]) if self._body.get(name) is not None else b""

    def strings(self, name: str) -> list[str]:
        """A `[]string` field."""
        value = self._body.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._wrong(name, value, "[]string")
        return list(value)

    def mapping(self, name: str) -> dict[str, str]:
        """A `map[string]string` field."""
        value = self._body.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._wrong(name, value, "map[string]string")
        return dict(value)


async def fields(request: web.Request, struct: str) -> Fields:
    """The request body as a Go struct would read it."""
    body = await http.json_object(request, lambda what: bad_request(f"body is not {what}"))
    return Fields(body, struct)


class Api:
    """Route handlers of the HTTP API."""

    def __init__(
        self,
        state: EmulatorState,
        messaging: Messaging,
        events: EventStore,
        *,
        version: str,
        manager_token: str | None,
    ) -> None:
        self._state = state
        self._messaging = messaging
        self._events = events
        self.version = version
        self._manager_token = manager_token
        self._started = time.monotonic()

    def add_routes(self, app: web.Application) -> None:
        """Registers the routes this version of the server has."""
        r = app.router
        r.add_get("/health", self._health)
        r.add_get("/varz", self._varz)
        r.add_post("/message/send", self._send)
        r.add_get("/message/byclientmsgno", self._by_client_msg_no)
        r.add_post("/channel/messagesync", self._messagesync)
        r.add_post("/user/token", self._user_token)
        if event_api(self.version):
            r.add_post("/message/event", self._event)
            r.add_post("/message/eventsync", self._eventsync)

    async def _health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def _varz(self, request: web.Request) -> web.Response:
        return json_response(varz(self.version, self._started, bool(self._manager_token)))

    async def _send(self, request: web.Request) -> web.Response:
        body = await fields(request, "messageSendReq")
        header = body.struct("header")
        client_msg_no = body.text("client_msg_no")
        is_stream = body.number("is_stream")
        from_uid = body.text("from_uid")
        channel_id = body.text("channel_id")
        channel_type = body.number("channel_type", UINT8, "uint8")
        expire = body.number("expire", UINT32, "uint32")
        subscribers = body.strings("subscribers")
        payload = body.data("payload")
        if not payload:
            raise bad_request("payload不能为空！")
        if not from_uid.strip():
            from_uid = SYSTEM_UID
        no_persist = header.number("no_persist")
        sync_once = header.number("sync_once")
        if not channel_id.strip() and not subscribers:
            raise bad_request("无法处理发送消息请求！")
        if subscribers:
            if sync_once != 1 or channel_id.strip():
                raise bad_request("无法处理发送消息请求！")
            raise bad_request("the emulator does not model subscriber (cmd) messages")
        if is_special(channel_id):
            raise bad_request("频道ID不合法！")
        message = self._messaging.send(
            from_uid,
            channel_id,
            channel_type,
            payload,
            client_msg_no=client_msg_no if client_msg_no.strip() else "",
            # before v2.2.4 there was no is_stream field: every message was a plain one
            stream=is_stream == 1 and event_api(self.version),
            persist=no_persist != 1,
            red_dot=header.number("red_dot"),
            sync_once=sync_once,
            expire=expire,
        )
        return ok({"client_msg_no": message.client_msg_no, "message_id": message.message_id})

    async def _event(self, request: web.Request) -> web.Response:
        body = await fields(request, "eventAppendReq")
        body.mapping("headers")  # stored by the server, never read back: only its type matters
        event = EventRequest(
            channel_id=body.text("channel_id"),
            channel_type=body.number("channel_type", UINT8, "uint8"),
            from_uid=body.text("from_uid"),
            message_id=body.number("message_id", INT64, "int64"),
            client_msg_no=body.text("client_msg_no"),
            event_id=body.text("event_id"),
            event_type=body.text("event_type"),
            event_key=body.text("event_key"),
            visibility=body.text("visibility"),
            occurred_at=body.number("occurred_at", INT64, "int64"),
            payload=body.raw("payload"),
        )
        try:
            return ok(self._messaging.event(event))
        except EventError as exc:
            raise bad_request(str(exc)) from exc

    async def _eventsync(self, request: web.Request) -> web.Response:
        body = await fields(request, "eventSyncReq")
        channel_id = body.text("channel_id")
        channel_type = body.number("channel_type", UINT8, "uint8")
        from_uid = body.text("from_uid")
        client_msg_no = body.text("client_msg_no")
        limit = body.number("limit")
        if not channel_id.strip():
            raise bad_request("channel_id不能为空！")
        if not client_msg_no.strip():
            raise bad_request("client_msg_no不能为空！")
        if limit < 0:
            raise bad_request("limit不能为负数！")
        stored = channel_id
        if channel_type == PERSON and from_uid.strip():
            stored = fake_channel_id(channel_id, from_uid)
        data = event_sync(
            self._events,
            stored,
            channel_type,
            client_msg_no,
            event_key=body.text("event_key"),
            from_seq=body.number("from_msg_event_seq", (0, 2**64 - 1), "uint64"),
            limit=min(limit or 200, 2000),
            include_private=body.number("include_private", UINT8, "uint8") == 1,
        )
        return ok(data)

    async def _messagesync(self, request: web.Request) -> web.Response:
        body = await fields(request, "syncMessagesReq")
        channel_id = body.text("channel_id")
        login_uid = body.text("login_uid")
        if not channel_id.strip():
            raise bad_request("channel_id不能为空！")
        if not login_uid.strip():
            raise bad_request("login_uid不能为空！")
        mode = body.text("event_summary_mode").strip().lower() or "full"
        try:
            answer = self._messaging.history(
                login_uid,
                channel_id,
                body.number("channel_type", UINT8, "uint8"),
                start=body.number("start_message_seq", (0, 2**64 - 1), "uint64"),
                end=body.number("end_message_seq", (0, 2**64 - 1), "uint64"),
                limit=min(body.number("limit"), 10000),
                pull_up=body.number("pull_mode") == 1,
                full_meta=mode == "full",
            )
        except ValueError as exc:
            raise bad_request(str(exc)) from exc
        return json_response(answer)

    async def _by_client_msg_no(self, request: web.Request) -> web.Response:
        channel_id = request.query.get("channel_id", "")
        channel_type = request.query.get("channel_type", "")
        client_msg_no = request.query.get("client_msg_no", "")
        if not channel_id.strip():
            raise bad_request("channel_id不能为空")
        if not channel_type.isdigit() or int(channel_type) == 0:
            raise bad_request("channel_type不能为0")
        if not client_msg_no.strip():
            raise bad_request("client_msg_no不能为空")
        # a person channel is named by its full stored id (`uid1@uid2`), as the server wants
        for message in self._state.channels.get((channel_id, int(channel_type)), []):
            if message.client_msg_no == client_msg_no:
                return json_response(message_resp(message))
        return json_response({"status": 404})

    async def _user_token(self, request: web.Request) -> web.Response:
        body = await fields(request, "UpdateTokenReq")
        uid = body.text("uid")
        token = body.text("token")
        device_flag = body.number("device_flag", UINT8, "wkproto.DeviceFlag")
        body.number("device_level", UINT8, "wkproto.DeviceLevel")
        if not uid:
            raise bad_request("uid不能为空！")
        if not token:
            raise bad_request("token不能为空！")
        if is_special(uid):
            raise bad_request("uid不能包含特殊字符！")
        if uid == SYSTEM_UID:
            raise bad_request("系统账号不允许更新token！")
        self._state.device_tokens[(uid, device_flag)] = token
        self._state.notify()
        return ok()
