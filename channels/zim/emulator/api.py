"""The ZIM server API on one port: `POST /?Action=...` with the signed public parameters in the
query and the business parameters in a JSON body. Every answer is HTTP 200 with a `Code` (0 ok).

Checked in the gateway's order: Action, AppId, Timestamp, SignatureNonce, Signature,
SignatureVersion, the signature's age (+-600 s), the signature itself; then the rate limit (sends
and edits share one app-wide sliding window), then the action's own parameters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from channels.emulator import http
from channels.emulator.control import CONTROL_PREFIX
from channels.zim.emulator import state as s
from channels.zim.emulator.signing import api_signature
from channels.zim.emulator.state import ApiError, EmulatorState, Fault, PeerMessage, Refusal

ACTION_KEY = web.RequestKey("zim_action", str)
FAULT_KEY = web.RequestKey("zim_fault", bool)
SIGNATURE_TTL = 600.0
MESSAGE_ACTIONS = frozenset({"SendPeerMessage", "EditC2cMsgBody"})  # one app-wide budget
EDITABLE_TYPES = (1, 10, 200)
MAX_ROBOTS_PER_CALL = 20
MAX_RECIPIENTS = 100
EM_MSG = 1  # EditType bit: the text

RobotMessageHook = Callable[[PeerMessage, str, list[PeerMessage]], None]  # (msg, why, batch)


def ok(state: EmulatorState, **fields: Any) -> web.Response:
    """A successful answer."""
    body = {"Code": s.OK, "Message": "success", "RequestId": state.request_id(), **fields}
    return web.json_response(body)


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ApiError(s.BAD_PARAM, f"{name} is required and must be a string")
    return value


def _integer(body: dict[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(s.BAD_PARAM, f"{name} must be a number")
    return value


def _message_text(body: dict[str, Any], limit: int) -> str:
    message_body = body.get("MessageBody")
    if not isinstance(message_body, dict):
        raise ApiError(s.BAD_PARAM, "MessageBody is required")
    text = _text(message_body, "Message")
    if len(text.encode()) > limit:
        raise ApiError(s.MESSAGE_TOO_LARGE, "message size exceeds the limit")
    return text


def action_fault_middleware(
    state: EmulatorState, answer: Callable[[web.Request, Fault], web.Response]
) -> Middleware:
    """Applies faults that name an action (every action shares the path `/`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        action = request[ACTION_KEY] = request.query.get("Action", "")
        for fault in state.faults:
            if fault.matches_action(request.method, request.path, action):
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        state.faults.remove(fault)
                if fault.delay > 0:
                    await asyncio.sleep(fault.delay)
                if fault.answers:
                    request[FAULT_KEY] = True
                    return answer(request, fault)
                break
        return await handler(request)

    return middleware


class Api:
    """Route handlers of the server API."""

    def __init__(
        self,
        state: EmulatorState,
        *,
        app_id: str,
        server_secret: str,
        qps: int,
        max_message_bytes: int,
        edit_window: float,
        exists_form: str,
        robot_message: RobotMessageHook,
    ) -> None:
        if exists_form not in ("list", "code"):
            raise ValueError("exists_form must be 'list' or 'code'")
        self._state = state
        self.app_id = app_id
        self.server_secret = server_secret
        self.max_message_bytes = max_message_bytes
        self.edit_window = edit_window
        self.exists_form = exists_form
        self._robot_message = robot_message
        self.messages_window = s.RateWindow(qps, 1.0, state.clock)
        self._windows: dict[str, s.RateWindow] = {}
        self._qps = qps
        self._state_seqs: dict[frozenset[str], int] = {}
        self._actions: dict[str, Callable[[dict[str, Any]], Awaitable[web.Response]]] = {
            "RobotRegister": self._register,
            "SendPeerMessage": self._send,
            "EditC2cMsgBody": self._edit,
            "QueryPeerMsg": self._query,
        }

    def add_routes(self, app: web.Application) -> None:
        """`POST /` (and GET, which the gateway also takes, with no body)."""
        app.router.add_post("/", self._handle)
        app.router.add_get("/", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        action = request.query.get("Action", "")
        request[ACTION_KEY] = action
        try:
            self._check_public(request.query, action)
            self._check_rate(action)
            body: dict[str, Any] = {}
            if request.method == "POST" and request.body_exists:
                body = await http.json_object(
                    request, lambda what: ApiError(s.BAD_PARAM, f"body is not {what}")
                )
            return await self._actions[action](body)
        except ApiError as exc:
            exc.request_id = self._state.request_id()
            return exc.response()

    def _check_public(self, query: Any, action: str) -> None:
        if not action:
            raise ApiError(s.ACTION_EMPTY, "Action is empty")
        if action not in self._actions:
            raise ApiError(s.ACTION_UNSUPPORTED, f"unsupported Action {action}")
        app_id = query.get("AppId", "")
        if not app_id.isdigit() or int(app_id) >= 2**32:
            raise ApiError(s.APP_ID_FORMAT, "invalid AppId")
        if app_id != self.app_id:
            raise ApiError(s.APP_UNKNOWN, "failed to get ServerSecret")
        timestamp = query.get("Timestamp", "")
        if not timestamp:
            raise ApiError(s.TIMESTAMP_EMPTY, "Timestamp is empty")
        if not timestamp.lstrip("-").isdigit():
            raise ApiError(s.TIMESTAMP_FORMAT, "invalid Timestamp")
        nonce = query.get("SignatureNonce", "")
        if not nonce:
            raise ApiError(s.NONCE_EMPTY, "SignatureNonce is empty")
        signature = query.get("Signature", "")
        if not signature:
            raise ApiError(s.SIGNATURE_EMPTY, "Signature is empty")
        version = query.get("SignatureVersion", "")
        if not version:
            raise ApiError(s.VERSION_EMPTY, "SignatureVersion is empty")
        if version != "2.0":
            raise ApiError(s.VERSION_UNSUPPORTED, f"unsupported SignatureVersion {version}")
        if abs(time.time() - int(timestamp)) > SIGNATURE_TTL:
            raise ApiError(s.SIGNATURE_EXPIRED, "signature expired")
        if signature != api_signature(app_id, nonce, self.server_secret, timestamp):
            raise ApiError(s.SIGNATURE_INVALID, "signature error")

    def _check_rate(self, action: str) -> None:
        if action in MESSAGE_ACTIONS:
            window = self.messages_window
        else:
            window = self._windows.setdefault(
                action, s.RateWindow(self._qps, 1.0, self._state.clock)
            )
        held = window.admit()
        if held is not None:
            refusal = Refusal(self._state.clock(), action, held)
            self._state.refusals.append(refusal)
            self._state.changed()
            raise ApiError(
                s.RATE_LIMITED, f"over the rate limit: {refusal.in_window} within the last second"
            )

    # -- actions ---------------------------------------------------------------------------------

    async def _register(self, body: dict[str, Any]) -> web.Response:
        infos = body.get("UserInfo")
        if not isinstance(infos, list) or not infos or not all(isinstance(i, dict) for i in infos):
            raise ApiError(s.BAD_PARAM, "UserInfo is required")
        if len(infos) > MAX_ROBOTS_PER_CALL:
            raise ApiError(s.TOO_MANY_USERS, "too many users")
        errors: list[dict[str, Any]] = []
        for info in infos:
            robot_id = info.get("UserId")
            name = info.get("UserName", "")
            avatar = info.get("UserAvatar", "")
            failure: tuple[int, str] | None = None
            if (
                not isinstance(robot_id, str)
                or not robot_id.startswith(s.ROBOT_PREFIX)
                or len(robot_id.encode()) > s.MAX_USER_ID_BYTES
            ):
                failure = (s.BAD_PARAM, "UserId must start with @RBT# and be at most 32 bytes")
            elif not isinstance(name, str) or len(name.encode()) > 256:
                failure = (s.ROBOT_NAME_TOO_LONG, "UserName too long")
            elif not isinstance(avatar, str) or len(avatar.encode()) > 500:
                failure = (s.ROBOT_AVATAR_TOO_LONG, "UserAvatar too long")
            elif (known := self._state.apps.get(robot_id)) is not None and known.registered:
                failure = (s.ROBOT_EXISTS, "Bot already exists")
            if failure is not None:
                errors.append({"UserId": robot_id, "SubCode": failure[0], "SubMessage": failure[1]})
                continue
            assert isinstance(robot_id, str)  # noqa: S101 - checked above; narrows for mypy
            self._state.apps[robot_id] = s.Robot(robot_id, True, name, avatar)
        self._state.changed()
        all_failed = len(errors) == len(infos)
        only_exists = all(e["SubCode"] == s.ROBOT_EXISTS for e in errors)
        if all_failed and (self.exists_form == "code" or not only_exists):
            raise ApiError(errors[0]["SubCode"], errors[0]["SubMessage"], ErrorList=errors)
        return ok(self._state, ErrorList=errors)

    async def _send(self, body: dict[str, Any]) -> web.Response:
        sender = _text(body, "FromUserId")
        receivers = body.get("ToUserId")
        if not isinstance(receivers, list) or not receivers:
            raise ApiError(s.BAD_PARAM, "ToUserId is required")
        if len(receivers) > MAX_RECIPIENTS:
            raise ApiError(s.TOO_MANY_USERS, "too many users")
        if not all(isinstance(r, str) and r for r in receivers) or sender in receivers:
            raise ApiError(s.BAD_PARAM, "ToUserId must be user ids other than FromUserId")
        msg_type = _integer(body, "MessageType")
        if _integer(body, "Priority") not in (1, 2, 3):
            raise ApiError(s.BAD_PARAM, "Priority must be 1, 2 or 3")
        text = _message_text(body, self.max_message_bytes)
        if not self._state.known_user(sender):
            raise ApiError(s.NOT_REGISTERED, "FromUserId is not registered")
        robot = sender if sender in self._state.apps else None
        msg_time = int(time.time() * 1000)
        sent = [
            self._state.store(
                sender,
                receiver,
                text,
                msg_type=msg_type,
                source=1,
                msg_time=msg_time,
                robot_id=robot or (receiver if receiver in self._state.apps else None),
            )
            for receiver in receivers
        ]
        for message in sent:
            self._robot_message(message, "send", sent)
        succ = [{"UserId": m.receiver, "MsgId": m.msg_id, "MsgSeq": m.msg_seq} for m in sent]
        return ok(self._state, ErrorList=[], SuccList=succ, AuditInfos=[])

    async def _edit(self, body: dict[str, Any]) -> web.Response:
        editor = _text(body, "FromUserId")
        sender = _text(body, "SenderId")
        peer = _text(body, "ConvId")
        msg_type = _integer(body, "MsgType")
        seq = _integer(body, "ConvMsgSeq")
        edit_type = _integer(body, "EditType")
        if msg_type not in EDITABLE_TYPES or not edit_type & EM_MSG:
            raise ApiError(s.BAD_PARAM, "only the text of a text, combined or custom message")
        text = _message_text(body, self.max_message_bytes)
        message = self._state.find(sender, peer, seq)
        if message is None or editor != sender:
            raise ApiError(s.EDIT_FAILED, "edit failed: no such message of the editor")
        if self._state.clock() - message.sent_at > self.edit_window:
            raise ApiError(s.EDIT_WINDOW_PASSED, "editable time exceeded")
        pair = frozenset((sender, peer))
        self._state_seqs[pair] = state_seq = self._state_seqs.get(pair, 0) + 1
        message.text = text
        message.texts.append(text)
        message.edit_seq += 1
        message.changed_at = self._state.clock()
        message.latest_edit_time = int(time.time())
        self._state.notify(message.chat_id or None)
        self._robot_message(message, "edit", [message])
        return ok(
            self._state,
            StateMsgSeq=state_seq,
            EditMsgSeq=message.edit_seq,
            LatestEditTime=message.latest_edit_time,
        )

    async def _query(self, body: dict[str, Any]) -> web.Response:
        owner = _text(body, "FromUserId")
        peer = _text(body, "ToUserId")
        limit = _integer(body, "Limit", 10)
        cursor = _integer(body, "Next", 0)
        with_empty = _integer(body, "WithEmptyMsg", 0)
        if not 0 < limit <= 100 or cursor < 0 or with_empty not in (0, 1):
            raise ApiError(s.BAD_PARAM, "Limit must be in (0, 100], Next at least 0")
        if not self._state.known_user(owner):
            raise ApiError(s.NOT_REGISTERED, "FromUserId is not registered")
        newest_first = sorted(
            self._state.conversations.get(frozenset((owner, peer)), []),
            key=lambda m: (m.msg_time, m.msg_seq),
            reverse=True,
        )
        if cursor:
            newest_first = [m for m in newest_first if m.msg_seq <= cursor]
        page, rest = newest_first[:limit], newest_first[limit:]
        items = [
            {
                "Sender": m.sender,
                "MsgType": m.msg_type,
                "SubMsgType": 0,
                "MsgBody": m.text,
                "MsgId": int(m.msg_id),
                "MsgSeq": m.msg_seq,
                "Payload": "",
                "MsgTime": m.msg_time,
                "IsEmpty": 0,
            }
            for m in page
        ]
        return ok(self._state, Next=rest[0].msg_seq if rest else 0, List=items)
