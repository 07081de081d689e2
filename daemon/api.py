"""Admin REST API under /api/v1: channels (CRUD, enable, disable, restart), conversations and
voice calls."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import ValidationError

from channels.voice.calls import VoiceCalls
from channels.voice.requests import CallError, StartCall
from daemon.channel_service import ApiError, ChannelService
from daemon.openapi import openapi_document
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
    ) -> None:
        self._service = service
        self._store = store
        self._agents = agents
        self._voice = voice

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
        r.add_get(f"{PREFIX}/voice/calls", self.list_calls)
        r.add_post(f"{PREFIX}/voice/calls", self.start_call)
        r.add_get(f"{PREFIX}/voice/calls/{{id}}", self.get_call)
        r.add_delete(f"{PREFIX}/voice/calls/{{id}}", self.stop_call)

    async def openapi(self, _: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def list_agents(self, _: web.Request) -> web.Response:
        return web.json_response({"agents": self._agents})

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
        records = await self._store.list_conversations(channel, limit=_limit(request, 100))
        return web.json_response(
            {
                "conversations": [
                    {
                        "id": c.id,
                        "channel_id": c.channel_id,
                        "key": c.key,
                        "user_id": c.user_id,
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
