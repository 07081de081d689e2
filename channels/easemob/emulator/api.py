"""The emulator's REST API, as an Easemob app's `https://{host}/{org}/{app}` answers it.

* `POST /token` grants app tokens (`client_credentials`); every other route wants
  `Authorization: Bearer <token>`: missing or expired is 401 `unauthorized`, a token this server
  never granted 401 `auth_bad_access_token`.
* `POST /users`, `GET /users/{name}`: registration (a taken name is 400
  `duplicate_unique_property_exists`) and lookup (404 `service_resource_not_found`).
* `POST /messages/users`: the message text and ext together at most `max_body_bytes` of UTF-8
  (else 400, `error_code` 14007); `rate_limit` calls a second (else 429 `reach_limit`).
* `PUT /messages/rewrite/{msg_id}`: only with rewriting enabled (else 403), at most 10 rewrites a
  message (the 11th: 403 `EditLimitExceededException`).
* Errors are `{"error", "exception", "timestamp", "duration", "error_description"}`.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import deque
from typing import Any

from aiohttp import web

from channels.easemob.emulator.messaging import Messaging
from channels.easemob.emulator.state import (
    MAX_EDITS,
    ApiError,
    EmulatorState,
    TokenRequest,
    illegal_argument,
    now_ms,
    reach_limit,
    rewrite_error,
    unauthorized,
)
from channels.emulator import http

USERNAME = re.compile(r"^[a-z0-9_.-]{1,64}$")
MESSAGE_TYPES = frozenset({"txt", "img", "audio", "video", "file", "loc", "cmd", "custom"})
REWRITABLE = frozenset({"txt", "custom"})
MAX_RECIPIENTS = 600
PERMANENT = float("inf")


def _bytes(value: Any) -> int:
    """The size of `value` as compact UTF-8 JSON."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _invalid(what: str) -> ApiError:
    return illegal_argument(f"request body must be {what}")


class RateLimiter:
    """At most `limit` calls of each kind in any second (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._calls: dict[str, deque[float]] = {}

    def take(self, kind: str) -> None:
        """Counts one call, or raises 429 when this second's calls are used up."""
        if self.limit <= 0:
            return
        now = time.monotonic()
        calls = self._calls.setdefault(kind, deque())
        while calls and now - calls[0] >= 1.0:
            calls.popleft()
        if len(calls) >= self.limit:
            raise reach_limit()
        calls.append(now)


class Api:
    """The REST routes of one app (`/{org}/{app}/...`)."""

    def __init__(
        self,
        state: EmulatorState,
        messaging: Messaging,
        *,
        org: str,
        app: str,
        client_id: str,
        client_secret: str,
        token_ttl: int,
        rate_limit: int,
        max_body_bytes: int,
    ) -> None:
        self.state = state
        self.messaging = messaging
        self.org = org
        self.app = app
        self.application = "8be024f0-e978-11e8-b697-5d598d5f8402"  # the app's uuid
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.limiter = RateLimiter(rate_limit)
        self.max_body_bytes = max_body_bytes

    @property
    def appkey(self) -> str:
        """`org#app`, as callbacks name the app."""
        return f"{self.org}#{self.app}"

    def add_routes(self, app: web.Application) -> None:
        """Registers the REST routes."""
        app.router.add_post("/{org}/{app}/token", self.token)
        app.router.add_post("/{org}/{app}/users", self.create_users)
        app.router.add_get("/{org}/{app}/users/{username}", self.get_user)
        app.router.add_post("/{org}/{app}/messages/users", self.send)
        app.router.add_put("/{org}/{app}/messages/rewrite/{msg_id}", self.rewrite)

    # -- checks ----------------------------------------------------------------------------------

    def _app_of(self, request: web.Request) -> None:
        org, app = request.match_info["org"], request.match_info["app"]
        if (org, app) != (self.org, self.app):
            raise ApiError(
                404,
                "organization_application_not_found",
                f"Could not find application for {org}/{app} from URI: "
                f"{org}/{app}{request.path.removeprefix(f'/{org}/{app}')}",
            )

    def _authorize(self, request: web.Request) -> None:
        self._app_of(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            raise unauthorized("Unable to authenticate due to expired access token")
        if self.state.app_for_token(token) is not None:
            return
        if token in self.state.issued:
            raise unauthorized("Unable to authenticate due to expired access token")
        raise unauthorized("Unable to authenticate", error="auth_bad_access_token")

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.text())
        except ValueError as exc:
            raise _invalid("JSON") from exc

    def _answer(self, request: web.Request, action: str, **fields: Any) -> web.Response:
        path = request.path.removeprefix(f"/{self.org}/{self.app}")
        base = {
            "path": path,
            "uri": f"{request.scheme}://{request.host}{request.path}",
            "timestamp": now_ms(),
            "organization": self.org,
            "application": self.application,
            "action": action,
        }
        tail = {"duration": 0, "applicationName": self.app}
        return web.json_response(base | fields | tail)

    # -- token -----------------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        self._app_of(request)
        body = http.loaded_object(await request.text(), _invalid)
        client_id = str(body.get("client_id", ""))
        refusal = self._refusal(body)
        expires_in = 0 if refusal else self._ttl(body.get("ttl"))
        self.state.token_requests.append(
            TokenRequest(
                len(self.state.token_requests) + 1,
                time.monotonic(),
                client_id,
                refusal is None,
                expires_in,
                refusal.message if refusal else "",
            )
        )
        self.state.changed()
        if refusal is not None:
            raise refusal
        token = "YWMt" + secrets.token_urlsafe(48)
        deadline = time.monotonic() + expires_in if expires_in else PERMANENT
        self.state.tokens[token] = (self.appkey, deadline)
        self.state.issued.add(token)
        return web.json_response(
            {"access_token": token, "expires_in": expires_in, "application": self.application}
        )

    def _refusal(self, body: dict[str, Any]) -> ApiError | None:
        """Why a token request is refused, if it is."""
        if body.get("grant_type") != "client_credentials":
            return ApiError(400, "unsupported_grant_type", "grant_type must be provided")
        if body.get("client_id") != self.client_id:
            return ApiError(400, "invalid_grant", "client_id does not exist")
        if body.get("client_secret") != self.client_secret:
            return ApiError(400, "invalid_grant", "invalid client_secret")
        return None

    def _ttl(self, requested: Any) -> int:
        """The token's lifetime: the one asked for, within the console's (`token_ttl`)."""
        try:
            ttl = int(requested)
        except (TypeError, ValueError):
            ttl = 0
        return ttl if 0 < ttl <= self.token_ttl else self.token_ttl

    # -- users -----------------------------------------------------------------------------------

    async def create_users(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self._body(request)
        specs = body if isinstance(body, list) else [body]
        names: list[str] = []
        for spec in specs:
            if not isinstance(spec, dict):
                raise _invalid("a JSON array of users")
            name = str(spec.get("username", "")).lower()
            if not USERNAME.match(name):
                raise illegal_argument(f"username [{name}] is not legal")
            if not spec.get("password"):
                raise illegal_argument("password or pin must provided")
            if name in self.state.users or name in names:
                raise ApiError(
                    400,
                    "duplicate_unique_property_exists",
                    f"Application {self.application} Entity user requires that property named "
                    f"username be unique, value of {name} exists",
                    exception="org.apache.usergrid.persistence.exceptions."
                    "DuplicateUniquePropertyExistsException",
                )
            names.append(name)
        entities = [self.state.add_user(name) for name in names]
        return self._answer(request, "post", entities=entities)

    async def get_user(self, request: web.Request) -> web.Response:
        self._authorize(request)
        entity = self.state.users.get(request.match_info["username"].lower())
        if entity is None:
            raise ApiError(
                404,
                "service_resource_not_found",
                "Service resource not found",
                exception="org.apache.usergrid.services.exceptions."
                "ServiceResourceNotFoundException",
            )
        return web.json_response(
            {
                "action": "get",
                "path": "/users",
                "uri": f"{request.scheme}://{request.host}{request.path}",
                "entities": [entity],
                "timestamp": now_ms(),
                "duration": 0,
                "count": 1,
            }
        )

    # -- messages --------------------------------------------------------------------------------

    async def send(self, request: web.Request) -> web.Response:
        self._authorize(request)
        self.limiter.take("messages/users")
        body = await self._body(request)
        if not isinstance(body, dict):
            raise _invalid("a JSON object")
        sender = body.get("from", "admin")
        if not isinstance(sender, str) or not sender:
            raise illegal_argument("from can not be empty")
        to = body.get("to")
        if not isinstance(to, list) or not to or not all(isinstance(t, str) and t for t in to):
            raise illegal_argument("to can not be empty")
        if len(to) > MAX_RECIPIENTS:
            raise illegal_argument("param to exceed limit")
        kind = body.get("type")
        content = body.get("body")
        if kind not in MESSAGE_TYPES or not isinstance(content, dict):
            raise illegal_argument("type and body must be provided")
        ext = body.get("ext") or {}
        if not isinstance(ext, dict):
            raise illegal_argument("ext must be a JSON object")
        if self._size(kind, content, ext) > self.max_body_bytes:
            raise ApiError(
                400,
                "message_send_error",
                "message is too large",
                exception="MessageSendException",
                error_code=14007,
            )
        sent = self.messaging.bot_send(sender, list(to), {**content, "type": kind}, ext)
        return self._answer(request, "post", data=sent)

    @staticmethod
    def _size(kind: str, content: dict[str, Any], ext: dict[str, Any]) -> int:
        """Bytes the 5 KB limit counts: the text (other types: the body) and the ext."""
        size = len(str(content.get("msg", "")).encode()) if kind == "txt" else _bytes(content)
        return size + (_bytes(ext) if ext else 0)

    async def rewrite(self, request: web.Request) -> web.Response:
        self._authorize(request)
        self.limiter.take("messages/rewrite")
        if not self.messaging.rewrite_enabled:
            raise rewrite_error(
                403,
                "EditFeatureNotEnabledException",
                "The edit message feature is not enabled for this user or system.",
            )
        msg_id = request.match_info["msg_id"]
        if not msg_id.isdigit():
            raise rewrite_error(
                400, "InvalidMessageIdException", "The provided message ID is not a valid number."
            )
        body = await self._body(request)
        if not isinstance(body, dict):
            raise _invalid("a JSON object")
        new_msg = body.get("new_msg")
        unsupported = rewrite_error(
            400,
            "UnsupportedMessageTypeException",
            "The message is of a type that is currently not supported for modification.",
        )
        if not isinstance(new_msg, dict) or new_msg.get("type") not in REWRITABLE:
            raise unsupported
        message = self.state.messages.get(msg_id)
        if message is None:
            raise rewrite_error(
                404, "MessageUnavailableException", "The message is unavailable or has expired."
            )
        if message.body.get("type") not in REWRITABLE:
            raise unsupported
        if message.edits >= MAX_EDITS:
            raise rewrite_error(
                403,
                "EditLimitExceededException",
                "The message has reached its edit limit and cannot be modified further.",
            )
        self.messaging.rewrite(
            message, new_msg, body.get("new_ext"), bool(body.get("is_combine_ext", True))
        )
        return self._answer(request, "put", data="success")
