"""Admin REST API under /api/v1: channels (CRUD, enable, disable, restart), conversations, users
(identities linked and unlinked by hand, blocking) and voice calls."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import ValidationError

from agents.circuit import CircuitBreaker
from channels.users.resolver import UserResolver
from channels.voice.calls import VoiceCalls
from channels.voice.requests import CallError, StartCall
from daemon.channel_service import ApiError, ChannelService
from daemon.openapi import openapi_document
from storage.base import Clock, utc_now
from storage.records import IdentityRecord, UserRecord
from storage.repository import Store

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PREFIX = "/api/v1"
MAX_LIMIT = 1000
MAX_DEPTH = 32  # settings are flat; deeper bodies are refused before anything walks them


def error_response(error: ApiError) -> web.Response:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.fields:
        body["fields"] = error.fields
    return web.json_response({"error": body}, status=error.status)


def make_error_middleware() -> Middleware:
    """Every /api error is JSON with a clear message; nothing internal leaks out."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(PREFIX):
            return await handler(request)
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            return error_response(ApiError(exc.status, code, exc.reason))
        except Exception:
            log.exception("admin API %s %s failed", request.method, request.path)
            return error_response(
                ApiError(500, "internal_error", "internal error; see the daemon log")
            )

    return errors


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _not_finite(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _check_values(body: Any) -> None:
    """Depth and strings, walked without recursion (a deep body must not recurse either)."""
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise _bad(f"the request body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            pending.extend((item, depth + 1) for item in (*value.keys(), *value.values()))
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                # JSON allows "\udc80", Unicode (and PostgreSQL) does not
                raise _bad(
                    "the request body contains a lone surrogate escape (\\ud800-\\udfff)"
                ) from None
            if "\x00" in value:
                raise _bad("the request body contains a NUL character (\\u0000)")


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; the guard has already required application/json in UTF-8."""
    raw = await request.read()
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_not_finite, parse_float=_finite)
    except UnicodeDecodeError:
        raise _bad("the request body is not UTF-8") from None
    except RecursionError:
        raise _bad(f"the request body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # JSONDecodeError, NaN/Infinity, numbers beyond Python's digit limit
        raise _bad("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    _check_values(body)
    return body


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def identity_view(identity: IdentityRecord) -> dict[str, Any]:
    """An IM account as the API shows it: which platform calls whom what, and whose it is."""
    return {
        "id": identity.id,
        "platform": identity.platform,
        "tenant": identity.tenant,
        "platform_user_id": identity.platform_user_id,
        "display_name": identity.display_name,
        "user_id": identity.user_id,
        "created_at": _when(identity.created_at),
        "updated_at": _when(identity.updated_at),
    }


def user_view(user: UserRecord, identities: list[IdentityRecord] | None = None) -> dict[str, Any]:
    """A person as the API shows it; with their identities when `identities` is given."""
    view: dict[str, Any] = {
        "id": user.id,
        "name": user.display_name,
        "email": user.email,
        "groups": list(user.groups),
        "auth_source": user.auth_source,
        "directory_id": user.directory_id,
        "blocked": user.blocked,
        "last_seen_at": _when(user.last_seen_at),
        "created_at": _when(user.created_at),
        "updated_at": _when(user.updated_at),
    }
    if identities is not None:
        view["identities"] = [identity_view(i) for i in identities]
    return view


def _identity_id(raw: Any, *, in_path: bool = False) -> int:
    """An identity id: a positive integer in JSON, its digits in a path segment."""
    if in_path and isinstance(raw, str) and raw.isdigit() and len(raw) <= 18:
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw < 2**63:
        raise ApiError(
            422,
            "validation_error",
            "identity_id: must be a positive integer (an identity's id)",
            [{"path": "identity_id", "message": "positive integer"}],
        )
    return raw


def _limit(request: web.Request, default: int) -> int:
    raw = request.query.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(
            422,
            "validation_error",
            f"limit: must be an integer from 1 to {MAX_LIMIT}",
            [{"path": "limit", "message": f"integer from 1 to {MAX_LIMIT}"}],
        )
    return int(raw)


class AdminApi:
    """Route handlers; thin: the service enforces the rules."""

    def __init__(
        self,
        service: ChannelService,
        store: Store,
        agents: list[dict[str, str]],
        voice: VoiceCalls | None = None,
        *,
        clock: Clock = utc_now,
        users: UserResolver | None = None,
        circuits: Mapping[str, CircuitBreaker] | None = None,
    ) -> None:
        self._service = service
        self._store = store
        self._agents = agents
        self._voice = voice
        self._clock = clock
        # told of blocks and links made here, so they apply now rather than at its next round
        self._users = users
        self._circuits = circuits or {}

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{PREFIX}/openapi.json", self.openapi)
        r.add_get(f"{PREFIX}/agents", self.list_agents)
        r.add_get(f"{PREFIX}/channels", self.list_channels)
        r.add_post(f"{PREFIX}/channels", self.create_channel)
        r.add_get(f"{PREFIX}/channels/{{id}}", self.get_channel)
        r.add_patch(f"{PREFIX}/channels/{{id}}", self.update_channel)
        r.add_delete(f"{PREFIX}/channels/{{id}}", self.delete_channel)
        r.add_post(f"{PREFIX}/channels/{{id}}/enable", self.enable_channel)
        r.add_post(f"{PREFIX}/channels/{{id}}/disable", self.disable_channel)
        r.add_post(f"{PREFIX}/channels/{{id}}/restart", self.restart_channel)
        r.add_get(f"{PREFIX}/conversations", self.list_conversations)
        r.add_get(f"{PREFIX}/conversations/{{id}}/messages", self.list_messages)
        r.add_get(f"{PREFIX}/users", self.list_users)
        r.add_get(f"{PREFIX}/users/{{id}}", self.get_user)
        r.add_post(f"{PREFIX}/users/{{id}}/identities", self.link_identity)
        r.add_delete(f"{PREFIX}/users/{{id}}/identities/{{identity_id}}", self.unlink_identity)
        r.add_post(f"{PREFIX}/users/{{id}}/block", self.block_user)
        r.add_post(f"{PREFIX}/users/{{id}}/unblock", self.unblock_user)
        r.add_get(f"{PREFIX}/voice/calls", self.list_calls)
        r.add_post(f"{PREFIX}/voice/calls", self.start_call)
        r.add_get(f"{PREFIX}/voice/calls/{{id}}", self.get_call)
        r.add_delete(f"{PREFIX}/voice/calls/{{id}}", self.stop_call)

    async def openapi(self, _: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def list_agents(self, _: web.Request) -> web.Response:
        agents: list[dict[str, Any]] = []
        for agent in self._agents:
            breaker = self._circuits.get(agent["name"])
            circuit = None if breaker is None else breaker.snapshot()
            agents.append({**agent, "circuit": circuit})
        return web.json_response({"agents": agents})

    async def list_channels(self, _: web.Request) -> web.Response:
        return web.json_response({"channels": await self._service.list()})

    async def create_channel(self, request: web.Request) -> web.Response:
        return web.json_response(await self._service.create(await _json_body(request)), status=201)

    async def get_channel(self, request: web.Request) -> web.Response:
        return web.json_response(await self._service.get(request.match_info["id"]))

    async def update_channel(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return web.json_response(await self._service.update(request.match_info["id"], body))

    async def delete_channel(self, request: web.Request) -> web.Response:
        await self._service.delete(request.match_info["id"])
        return web.Response(status=204)

    async def enable_channel(self, request: web.Request) -> web.Response:
        return web.json_response(await self._service.set_enabled(request.match_info["id"], True))

    async def disable_channel(self, request: web.Request) -> web.Response:
        return web.json_response(await self._service.set_enabled(request.match_info["id"], False))

    async def restart_channel(self, request: web.Request) -> web.Response:
        return web.json_response(await self._service.restart(request.match_info["id"]))

    async def list_conversations(self, request: web.Request) -> web.Response:
        channel = request.query.get("channel") or None
        if channel is not None:
            await self._service.get_record(channel)
        user_id = request.query.get("user") or None
        if user_id is not None and not await self._store.get_users([user_id]):
            raise ApiError(404, "not_found", f"no user {user_id!r}")
        records = await self._store.list_conversations(
            channel, limit=_limit(request, 100), user_id=user_id
        )
        people = await self._people({c.user_id for c in records})
        return web.json_response(
            {
                "conversations": [
                    {
                        "id": c.id,
                        "channel_id": c.channel_id,
                        "key": c.key,
                        "user_id": c.user_id,
                        "user": people.get(c.user_id, {"id": c.user_id, "name": "", "email": None}),
                        "created_at": c.created_at.isoformat(),
                        "last_activity_at": c.last_activity_at.isoformat(),
                    }
                    for c in records
                ]
            }
        )

    async def list_messages(self, request: web.Request) -> web.Response:
        conversation_id = request.match_info["id"]
        if await self._store.get_conversation(conversation_id) is None:
            raise ApiError(404, "not_found", f"no conversation {conversation_id!r}")
        records = await self._store.recent_messages(conversation_id, _limit(request, 200))
        return web.json_response(
            {
                "messages": [
                    {
                        "id": m.id,
                        "role": m.role,
                        "content": m.content,
                        "source": m.source,
                        "interrupted": m.interrupted,
                        "created_at": m.created_at.isoformat(),
                    }
                    for m in records
                ]
            }
        )

    async def _people(self, user_ids: set[str]) -> dict[str, dict[str, Any]]:
        """Who each user is ({id, name, email}), for the conversation list: one read."""
        users = await self._store.get_users(user_ids)
        return {
            u.id: {"id": u.id, "name": u.display_name, "email": u.email} for u in users.values()
        }

    # -- users ------------------------------------------------------------------------------

    async def _user(self, user_id: str) -> tuple[UserRecord, list[IdentityRecord]]:
        found = await self._store.get_user(user_id)
        if found is None:
            raise ApiError(404, "not_found", f"no user {user_id!r}")
        return found

    async def list_users(self, request: web.Request) -> web.Response:
        search = request.query.get("search", "").strip() or None
        users = await self._store.list_users(search=search, limit=_limit(request, 100))
        return web.json_response({"users": [user_view(u) for u in users]})

    async def get_user(self, request: web.Request) -> web.Response:
        return web.json_response(user_view(*await self._user(request.match_info["id"])))

    async def link_identity(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        identity_id = _identity_id(body.get("identity_id"))
        user, _ = await self._user(request.match_info["id"])
        identity = await self._store.get_identity(identity_id)
        if identity is None:
            raise ApiError(404, "not_found", f"no identity {identity_id}")
        await self._store.link_identity(
            identity.platform,
            identity.tenant,
            identity.platform_user_id,
            user.id,
            display_name=identity.display_name,
            now=self._clock(),
        )
        if self._users is not None:
            self._users.forget()  # who is who changed: asked again
        return web.json_response(user_view(*await self._user(user.id)))

    async def unlink_identity(self, request: web.Request) -> web.Response:
        identity_id = _identity_id(request.match_info["identity_id"], in_path=True)
        user, identities = await self._user(request.match_info["id"])
        if not any(i.id == identity_id for i in identities):
            raise ApiError(404, "not_found", f"user {user.id!r} has no identity {identity_id}")
        moved = await self._store.unlink_identity(identity_id, owner=user.id)
        if moved is None:  # linked elsewhere meanwhile: the check above no longer holds
            raise ApiError(404, "not_found", f"user {user.id!r} has no identity {identity_id}")
        if self._users is not None:
            self._users.forget()
        return web.json_response(identity_view(moved))

    async def block_user(self, request: web.Request) -> web.Response:
        return await self._set_blocked(request.match_info["id"], blocked=True)

    async def unblock_user(self, request: web.Request) -> web.Response:
        return await self._set_blocked(request.match_info["id"], blocked=False)

    async def _set_blocked(self, user_id: str, *, blocked: bool) -> web.Response:
        if await self._store.set_blocked(user_id, blocked, now=self._clock()) is None:
            raise ApiError(404, "not_found", f"no user {user_id!r}")
        if self._users is not None:
            await self._users.refresh_blocked()  # on this replica at once, the others within 30 s
        return web.json_response(user_view(*await self._user(user_id)))

    # -- voice calls ------------------------------------------------------------------------

    def _calls(self) -> VoiceCalls:
        if self._voice is None:
            raise ApiError(503, "unavailable", "voice calls are not available yet")
        return self._voice

    async def list_calls(self, request: web.Request) -> web.Response:
        channel = request.query.get("channel") or None
        return web.json_response({"calls": await self._calls().list_calls(channel)})

    async def start_call(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            start = StartCall.model_validate(body)
        except ValidationError as exc:
            fields = [
                {"path": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
                for e in exc.errors(include_input=False)
            ]
            summary = "; ".join(f"{f['path']}: {f['message']}" for f in fields)
            raise ApiError(422, "validation_error", f"invalid call: {summary}", fields) from None
        try:
            return web.json_response(await self._calls().start_call(start), status=201)
        except CallError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None

    async def get_call(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(await self._calls().get_call(request.match_info["id"]))
        except CallError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None

    async def stop_call(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(await self._calls().stop_call(request.match_info["id"]))
        except CallError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None
