"""The emulator's OpenAPI: access tokens, cards and card streaming, robot sends, sessionWebhook,
and the older oapi host's member details (`topapi/v2/user/get`), served on the same port."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from channels.dingtalk.emulator.state import (
    ApiError,
    CardState,
    CardUpdate,
    ChatItem,
    EmulatorState,
)
from channels.emulator import http
from channels.emulator.http import APP_KEY

TOKEN_HEADER = "x-acs-dingtalk-access-token"  # noqa: S105 - a header name, not a secret
SPACE_PREFIX = "dtv1.card//"
MSG_KEYS = ("sampleText", "sampleMarkdown", "sampleLink", "sampleActionCard", "sampleImageMsg")
BATCH_LIMIT = 20
SESSION_MISSING = {"errcode": 300001, "errmsg": "session 不存在"}  # what DingTalk answers, HTTP 200
# the oapi host's answers (HTTP 200 with an errcode)
OAPI_BAD_TOKEN = {"errcode": 40014, "errmsg": "不合法的access_token"}
OAPI_NO_PERMISSION = {
    "errcode": 88,
    "sub_code": "60011",
    "sub_msg": "没有调用该接口的权限",
    "errmsg": "ding talk error[subcode=60011,submsg=没有调用该接口的权限]",
}
OAPI_NO_USER = {"errcode": 60121, "errmsg": "找不到该用户"}


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or DingTalk's InvalidParameter error."""
    return await http.json_object(
        request, lambda what: ApiError(400, "InvalidParameter", f"body must be {what}")
    )


def _required(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, "MissingParameter", f"{name} is mandatory for this action.")
    return value


def _param_map(body: dict[str, Any]) -> dict[str, str]:
    card_data = body.get("cardData") or {}
    params = card_data.get("cardParamMap") if isinstance(card_data, dict) else None
    if params is None:
        return {}
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise ApiError(400, "InvalidParameter", "cardData.cardParamMap must map strings to strings")
    return {str(k): v for k, v in params.items()}


def _message_text(msg_key: str, params: dict[str, Any]) -> tuple[str, str, str]:
    """(msgtype, title, text) of a robot message as the user would read it."""
    if msg_key == "sampleText":
        return "text", "", str(params.get("content", ""))
    if msg_key == "sampleMarkdown":
        return "markdown", str(params.get("title", "")), str(params.get("text", ""))
    return msg_key, str(params.get("title", "")), str(params.get("text", params.get("content", "")))


class OpenApi:
    """Route handlers for the token-protected OpenAPI and the sessionWebhook."""

    def __init__(self, state: EmulatorState, *, token_ttl: int) -> None:
        self._state = state
        self.token_ttl = token_ttl

    def add_routes(self, app: web.Application) -> None:
        """Registers the OpenAPI routes."""
        r = app.router
        r.add_post("/v1.0/oauth2/accessToken", self._access_token)
        r.add_post("/v1.0/card/instances", self._create_card)
        r.add_post("/v1.0/card/instances/deliver", self._deliver_card)
        r.add_post("/v1.0/card/instances/createAndDeliver", self._create_and_deliver)
        r.add_put("/v1.0/card/instances", self._update_card)
        r.add_put("/v1.0/card/streaming", self._stream_card)
        r.add_post("/v1.0/robot/oToMessages/batchSend", self._batch_send)
        r.add_post("/v1.0/robot/groupMessages/send", self._group_send)
        r.add_post("/robot/sendBySession", self._send_by_session)
        r.add_post("/topapi/v2/user/get", self._user_get)

    async def _access_token(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        unknown = ApiError(400, "invalidClientId", "应用不存在 (appKey is invalid)")
        app = http.known_app(request, self._state.apps, body.get("appKey", ""), unknown)
        if body.get("appSecret") != app.client_secret:
            raise ApiError(400, "invalidClientSecret", "应用凭证无效 (appSecret is invalid)")
        token = secrets.token_hex(16)
        self._state.tokens[token] = (app.client_id, time.monotonic() + self.token_ttl)
        self._state.notify()
        return web.json_response({"accessToken": token, "expireIn": self.token_ttl})

    def _authenticate(self, request: web.Request) -> str:
        client_id = self._state.app_for_token(request.headers.get(TOKEN_HEADER, ""))
        if client_id is None:
            raise ApiError(401, "InvalidAuthentication", "不合法的access_token")
        request[APP_KEY] = client_id
        return client_id

    def _card(self, client_id: str, out_track_id: str) -> CardState:
        card = self._state.cards.get(out_track_id)
        if card is None or card.client_id != client_id:
            raise ApiError(
                400, "param.cardInstanceNotExist", "卡片实例不存在 (outTrackId not found)"
            )
        return card

    def _create(self, client_id: str, body: dict[str, Any]) -> CardState:
        template_id = _required(body, "cardTemplateId")
        out_track_id = _required(body, "outTrackId")
        if template_id not in self._state.templates:
            raise ApiError(400, "param.templateUnpublished", "param.templateUnpublished")
        params = _param_map(body)
        existing = self._state.cards.get(out_track_id)
        if existing is not None:
            # outTrackId is the caller's idempotency key: a retried create by the same app with the
            # same template is accepted without creating a second card.
            if existing.client_id != client_id or existing.template_id != template_id:
                raise ApiError(400, "param.outTrackIdDuplicated", "outTrackId already used")
            return existing
        card = CardState(
            out_track_id=out_track_id,
            client_id=client_id,
            template_id=template_id,
            content_key=self._state.templates[template_id],
            card_data=params,
        )
        card.history.append(CardUpdate(time.monotonic(), "create", body))
        self._state.cards[out_track_id] = card
        self._state.notify()
        return card

    def _deliver(
        self, client_id: str, card: CardState, body: dict[str, Any]
    ) -> list[dict[str, Any]]:
        open_space_id = _required(body, "openSpaceId")
        if not open_space_id.startswith(SPACE_PREFIX):
            raise ApiError(400, "InvalidParameter.OpenSpaceId", "openSpaceId is invalid")
        robot_code = self._state.apps[client_id].effective_robot_code
        results = []
        for space in open_space_id[len(SPACE_PREFIX) :].split(";"):
            space_type, _, space_id = space.partition(".")
            error = ""
            if space_type == "IM_ROBOT":
                model = body.get("imRobotOpenDeliverModel")
                conversation_id = self._state.direct_conversation_id(client_id, space_id)
                conv_type = "1"
            elif space_type == "IM_GROUP":
                model = body.get("imGroupOpenDeliverModel")
                conversation_id, conv_type = space_id, "2"
                if isinstance(model, dict) and model.get("robotCode") not in (None, robot_code):
                    error = "robotCode does not belong to this app"
            else:
                model, conversation_id, conv_type = None, "", ""
                error = f"unsupported spaceType {space_type}"
            if not error and not space_id:
                error = "spaceId is empty"
            if not error and not isinstance(model, dict):
                error = f"deliver model for {space_type} is missing"
            if not error and self._state.failing_deliveries:
                error = self._state.failing_deliveries.pop(0)
            if not error:
                conv = self._state.conversation(client_id, conversation_id, conv_type)
                if conversation_id not in card.conversation_ids:
                    card.conversation_ids.append(conversation_id)
                    card.open_space_ids.append(f"{SPACE_PREFIX}{space}")
                    self._state.add_item(
                        conv, ChatItem(card.out_track_id, "card", time.monotonic(), via="card")
                    )
            results.append(
                {
                    "spaceType": space_type,
                    "spaceId": space_id,
                    "success": not error,
                    "errorMsg": error,
                    "carrierId": "" if error else uuid.uuid4().hex,
                }
            )
        card.history.append(CardUpdate(time.monotonic(), "deliver", body))
        self._state.notify()
        return results

    async def _create_card(self, request: web.Request) -> web.Response:
        client_id = self._authenticate(request)
        card = self._create(client_id, await json_object(request))
        return web.json_response({"success": True, "result": card.out_track_id})

    async def _deliver_card(self, request: web.Request) -> web.Response:
        client_id = self._authenticate(request)
        body = await json_object(request)
        card = self._card(client_id, _required(body, "outTrackId"))
        return web.json_response({"success": True, "result": self._deliver(client_id, card, body)})

    async def _create_and_deliver(self, request: web.Request) -> web.Response:
        client_id = self._authenticate(request)
        body = await json_object(request)
        _required(body, "openSpaceId")
        card = self._create(client_id, body)
        results = self._deliver(client_id, card, body)
        # A failed space still answers HTTP 200 with success true: the failure hides in results.
        return web.json_response(
            {
                "success": True,
                "result": {"outTrackId": card.out_track_id, "deliverResults": results},
            }
        )

    async def _update_card(self, request: web.Request) -> web.Response:
        client_id = self._authenticate(request)
        body = await json_object(request)
        card = self._card(client_id, _required(body, "outTrackId"))
        params = _param_map(body)
        options = body.get("cardUpdateOptions") or {}
        if isinstance(options, dict) and options.get("updateCardDataByKey"):
            card.card_data.update(params)
        elif "cardData" in body:
            card.card_data = params
        card.history.append(CardUpdate(time.monotonic(), "update", body))
        self._notify_card(card)
        return web.json_response({"success": True, "result": True})

    async def _stream_card(self, request: web.Request) -> web.Response:
        client_id = self._authenticate(request)
        body = await json_object(request)
        card = self._card(client_id, _required(body, "outTrackId"))
        guid = _required(body, "guid")
        key = _required(body, "key")
        content = body.get("content")
        if not isinstance(content, str):
            raise ApiError(400, "MissingParameter", "content is mandatory for this action.")
        if guid not in card.guids:  # a retried update with the same guid is applied once
            card.guids.add(guid)
            if body.get("isFull", False):
                card.contents[key] = content
            else:
                card.contents[key] = card.contents.get(key, "") + content
            card.finalized = card.finalized or bool(body.get("isFinalize", False))
            card.error = card.error or bool(body.get("isError", False))
        card.history.append(CardUpdate(time.monotonic(), "stream", body))
        self._notify_card(card)
        return web.json_response({"success": True, "result": True})

    def _notify_card(self, card: CardState) -> None:
        for conversation_id in card.conversation_ids:
            self._state.notify(conversation_id)
        if not card.conversation_ids:
            self._state.notify()

    def _robot_message(self, client_id: str, body: dict[str, Any]) -> tuple[str, str, str]:
        robot_code = _required(body, "robotCode")
        if robot_code != self._state.apps[client_id].effective_robot_code:
            raise ApiError(400, "resource.not.found", "机器人不存在 (robotCode is invalid)")
        msg_key = _required(body, "msgKey")
        if msg_key not in MSG_KEYS:
            raise ApiError(400, "InvalidParameter.MsgKey", f"msgKey {msg_key} is not supported")
        params = http.loaded_object(
            _required(body, "msgParam"),
            lambda what: ApiError(400, "InvalidParameter.MsgParam", f"msgParam must be {what}"),
        )
        return _message_text(msg_key, params)

    async def _batch_send(self, request: web.Request) -> web.Response:
        client_id = self._authenticate(request)
        body = await json_object(request)
        user_ids = body.get("userIds")
        if not isinstance(user_ids, list) or not user_ids:
            raise ApiError(400, "MissingParameter", "userIds is mandatory for this action.")
        if len(user_ids) > BATCH_LIMIT:
            raise ApiError(400, "InvalidParameter.UserIds", f"userIds exceeds {BATCH_LIMIT}")
        msgtype, title, text = self._robot_message(client_id, body)
        for user_id in user_ids:
            cid = self._state.direct_conversation_id(client_id, str(user_id))
            conv = self._state.conversation(client_id, cid, "1")
            item = ChatItem(
                self._state.next_item_id(),
                "message",
                time.monotonic(),
                "robot",
                msgtype,
                text,
                title,
            )
            self._state.add_item(conv, item)
        return web.json_response(
            {
                "processQueryKey": secrets.token_urlsafe(24),
                "invalidStaffIdList": [],
                "flowControlledStaffIdList": [],
                "filteredStaffIdList": [],
            }
        )

    async def _group_send(self, request: web.Request) -> web.Response:
        client_id = self._authenticate(request)
        body = await json_object(request)
        conversation_id = _required(body, "openConversationId")
        msgtype, title, text = self._robot_message(client_id, body)
        conv = self._state.conversation(client_id, conversation_id, "2")
        item = ChatItem(
            self._state.next_item_id(), "message", time.monotonic(), "robot", msgtype, text, title
        )
        self._state.add_item(conv, item)
        return web.json_response({"processQueryKey": secrets.token_urlsafe(24)})

    async def _send_by_session(self, request: web.Request) -> web.Response:
        session = self._state.sessions.get(request.query.get("session", ""))
        if session is None or not session.valid():
            return web.json_response(SESSION_MISSING)
        request[APP_KEY] = session.client_id
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"errcode": 40035, "errmsg": "缺少参数 json"})
        msgtype = body.get("msgtype") if isinstance(body, dict) else None
        section = body.get(msgtype) if isinstance(msgtype, str) else None
        if not isinstance(msgtype, str) or not isinstance(section, dict):
            return web.json_response({"errcode": 40035, "errmsg": "缺少参数 msgtype"})
        if msgtype == "text":
            title, text = "", str(section.get("content", ""))
        else:
            title, text = str(section.get("title", "")), str(section.get("text", ""))
        at = body.get("at") if isinstance(body.get("at"), dict) else {}
        at_ids = [str(u) for u in at.get("atUserIds") or []]
        conv = self._state.chats[session.conversation_id]
        item = ChatItem(
            self._state.next_item_id(),
            "message",
            time.monotonic(),
            "session",
            msgtype,
            text,
            title,
            at_user_ids=at_ids,
        )
        self._state.add_item(conv, item)
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _user_get(self, request: web.Request) -> web.Response:
        # DingTalk takes the parameters as a JSON body or as a form, the token in the query
        # string (or the form)
        raw = await request.text()
        try:
            body = json.loads(raw) if raw.lstrip().startswith("{") else dict(parse_qsl(raw))
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        token = request.query.get("access_token") or str(body.get("access_token", ""))
        client_id = self._state.app_for_token(token)
        if client_id is None:
            return web.json_response(OAPI_BAD_TOKEN)
        request[APP_KEY] = client_id
        access = self._state.profile_access
        if access == "none":
            return web.json_response({**OAPI_NO_PERMISSION, "request_id": uuid.uuid4().hex[:12]})
        user = self._state.users.get(str(body.get("userid", "")))
        if user is None:
            return web.json_response(OAPI_NO_USER)
        result: dict[str, Any] = {
            "userid": user.staff_id,
            "name": user.name,
            "job_number": user.job_number,
            "active": True,
            "dept_id_list": [1],
        }
        if access == "full":  # the e-mail and the mobile each need a permission of their own
            result.update(email=user.email, mobile=user.mobile, state_code="86")
        return web.json_response(
            {"errcode": 0, "errmsg": "ok", "result": result, "request_id": uuid.uuid4().hex[:12]}
        )
