"""The emulator's OpenAPI: tenant tokens, IM send / reply, bot info (CardKit is beside it).

Codes follow docs/platforms/feishu.md §4; choices where it is silent (unverified, its §6):
* Business errors answer HTTP 400 with a non-zero `code`, token errors included (99991661
  missing token, 99991663 invalid or expired token).
* `tenant_access_token/internal` with a wrong secret: HTTP 400, code 10014; unknown app: 10003.
  The same token is handed out again while more than 30 minutes of it are left (half its
  lifetime when the configured TTL is shorter, for tests); then a new one, both valid [doc].
* Sending an interactive card entity a second time: code 230099 (card content error).
* A chat the bot is not in: 230002; a reply to an unknown message: 230011.
* Parameter validation failures: 99992402 ("field validation failed").
* `GET /open-apis/bot/v3/info` answers `{"code":0,"bot":{"open_id","app_name",...}}` at the top
  level, a shape known from third-party use only.
* A chat allows 5 bot messages per second; calls answered from the `uuid` dedupe (same uuid
  within an hour: the first message again) do not count.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from typing import Any

from aiohttp import web

from channels.emulator import http
from channels.emulator.http import APP_KEY
from channels.feishu.emulator.payloads import SEND_TYPES, message_object, new_message_id, sent_text
from channels.feishu.emulator.state import (
    ApiError,
    CardOp,
    Chat,
    ChatItem,
    EmulatorState,
    FeishuApp,
)

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"  # noqa: S105 - a path
TEXT_LIMIT = 150 * 1024
CARD_LIMIT = 30 * 1024
CHAT_QPS = 5  # messages per second per chat (shared by every bot in it)
UUID_WINDOW = 3600.0
REFRESH_BELOW = 30 * 60  # a token with less left than this is replaced by a new one


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a Feishu validation error."""
    return await http.json_object(
        request,
        lambda what: ApiError(400, 99992402, f"field validation failed: body is not {what}"),
    )


def required_str(body: dict[str, Any], name: str) -> str:
    """A mandatory non-empty string field."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, 99992402, f"field validation failed: {name} is required")
    return value


class OpenApi:
    """Route handlers for tokens, IM messages and bot info."""

    def __init__(self, state: EmulatorState, *, token_ttl: int) -> None:
        self._state = state
        self.token_ttl = token_ttl
        self._uuids: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._sends: dict[str, deque[float]] = {}  # chat id -> monotonic times of bot sends

    def add_routes(self, app: web.Application) -> None:
        """Registers the OpenAPI routes."""
        r = app.router
        r.add_post(TOKEN_PATH, self._token)
        r.add_post("/open-apis/im/v1/messages", self._create)
        r.add_post("/open-apis/im/v1/messages/{message_id}/reply", self._reply)
        r.add_get("/open-apis/bot/v3/info", self._bot_info)

    async def _token(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        unknown = ApiError(400, 10003, "invalid param: app_id not found")
        app = http.known_app(request, self._state.apps, body.get("app_id", ""), unknown)
        if body.get("app_secret") != app.app_secret:
            raise ApiError(400, 10014, "app secret invalid")
        now = time.monotonic()
        current = [
            (deadline, token)
            for token, (app_id, deadline) in self._state.tokens.items()
            if app_id == app.app_id and deadline - now >= min(REFRESH_BELOW, self.token_ttl / 2)
        ]
        if current:
            deadline, token = max(current)
        else:
            token = "t-" + secrets.token_hex(20)
            deadline = now + self.token_ttl
            self._state.tokens[token] = (app.app_id, deadline)
        self._state.notify()
        return web.json_response(
            {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": int(deadline - now)}
        )

    def authenticate(self, request: web.Request) -> FeishuApp:
        """The app whose valid tenant token the request carries."""
        header = request.headers.get("Authorization", "")
        if not header:
            raise ApiError(400, 99991661, "Missing access token for authorization.")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            raise ApiError(400, 99991671, "Invalid access token format.")
        app_id = self._state.app_for_token(token)
        if app_id is None:
            raise ApiError(
                400,
                99991663,
                "Invalid access token for authorization. "
                "Please make a request with token attached.",
            )
        request[APP_KEY] = app_id
        return self._state.apps[app_id]

    async def _bot_info(self, request: web.Request) -> web.Response:
        app = self.authenticate(request)
        bot = {
            "activate_status": 2,
            "app_name": app.bot_name,
            "avatar_url": "",
            "ip_white_list": [],
            "open_id": app.bot_open_id,
        }
        return web.json_response({"code": 0, "msg": "ok", "bot": bot})

    # -- messages --------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        app = self.authenticate(request)
        body = await json_object(request)
        id_type = request.query.get("receive_id_type", "")
        receive_id = required_str(body, "receive_id")
        if id_type == "chat_id":
            chat = self._state.chats.get(receive_id)
            if chat is None or chat.app_id != app.app_id:
                raise ApiError(400, 230002, "The bot is not in the chat.")
        elif id_type == "open_id":
            chat_id = self._state.p2p_chat_id(app.app_id, receive_id)
            chat = self._state.chat(app.app_id, chat_id, "p2p")
        else:
            raise ApiError(400, 99992402, "field validation failed: receive_id_type")
        return web.json_response(self._send(app, chat, body, parent=""))

    async def _reply(self, request: web.Request) -> web.Response:
        app = self.authenticate(request)
        body = await json_object(request)
        parent_id = request.match_info["message_id"]
        found = self._state.messages.get(parent_id)
        if found is None or self._state.chats[found[0]].app_id != app.app_id:
            raise ApiError(400, 230011, "The message was withdrawn or does not exist.")
        return web.json_response(self._send(app, self._state.chats[found[0]], body, parent_id))

    def _send(
        self, app: FeishuApp, chat: Chat, body: dict[str, Any], parent: str
    ) -> dict[str, Any]:
        msg_type = required_str(body, "msg_type")
        raw = required_str(body, "content")
        dedupe = body.get("uuid")
        now = time.monotonic()
        if isinstance(dedupe, str) and dedupe:
            seen = self._uuids.get((app.app_id, dedupe))
            if seen is not None and now - seen[0] < UUID_WINDOW:
                return {"code": 0, "msg": "success", "data": seen[1]}
        if msg_type not in SEND_TYPES:
            raise ApiError(400, 230001, f"invalid msg_type {msg_type}")
        content = http.loaded_object(
            raw, lambda what: ApiError(400, 230001, f"content is not {what}")
        )
        limit = TEXT_LIMIT if msg_type == "text" else CARD_LIMIT
        if len(raw.encode()) > limit:
            raise ApiError(400, 230025, "The message content exceeds the length limit.")
        if msg_type == "text" and not isinstance(content.get("text"), str):
            raise ApiError(400, 230001, "text content needs a text field")
        if msg_type == "post" and "post" in content:
            raise ApiError(400, 230001, "post content must be a locale map")
        sends = self._sends.setdefault(chat.chat_id, deque())
        while sends and now - sends[0] >= 1.0:
            sends.popleft()
        if len(sends) >= CHAT_QPS:
            raise ApiError(400, 230020, "This operation triggers the frequency limit.")
        card = self._card_entity(app, content) if msg_type == "interactive" else None
        sends.append(now)
        item_id = new_message_id()
        text = card.text if card is not None else sent_text(msg_type, content)
        item = ChatItem(item_id, "card" if card else "message", now, msg_type, text, app.bot_name)
        item.reply_to = parent
        item.content = raw
        item.uuid = dedupe if isinstance(dedupe, str) else ""
        if card is not None:
            item.card_id = card.card_id
            card.message_id = item_id
            card.chat_id = chat.chat_id
            card.history.append(CardOp(now, "send", dict(body)))
        self._state.add_item(chat, item)
        data = message_object(
            item_id,
            app=app,
            chat_id=chat.chat_id,
            msg_type=msg_type,
            content=raw,
            parent_id=parent,
            create_time_ms=int(time.time() * 1000),
        )
        if isinstance(dedupe, str) and dedupe:
            self._uuids[(app.app_id, dedupe)] = (now, data)
        return {"code": 0, "msg": "success", "data": data}

    def _card_entity(self, app: FeishuApp, content: dict[str, Any]) -> Any:
        if content.get("type") != "card":
            return None  # an inline card JSON: rendered from the content itself
        data = content.get("data")
        card_id = data.get("card_id") if isinstance(data, dict) else None
        card = self._state.cards.get(str(card_id))
        if card is None or card.app_id != app.app_id:
            raise ApiError(
                400, 230099, "Failed to create card content, ext=ErrCode: 200740; card not found"
            )
        if card.message_id:
            raise ApiError(
                400, 230099, "Failed to create card content, ext=card entity can only be sent once"
            )
        return card
