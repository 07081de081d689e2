"""What every emulator's `/_emulator/` control plane shares: JSON in, JSON out, for other
processes (`channeld chat`, benchmarks): simulate users, read chats and cards (long-poll with
`since`/`wait`), inspect calls, acks and connections, inject faults.

Routes and their JSON are the same on every platform; only the field names are the platform's
(`client_id` or `app_id`, `conversation_id` or `chat_id`, ...).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from aiohttp import web

if TYPE_CHECKING:
    from channels.emulator.server import EmulatorServer

CONTROL_PREFIX = "/_emulator/"
MAX_WAIT = 60.0  # long-poll ceiling, well under common client timeouts

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, Handler]  # method, path under CONTROL_PREFIX, handler


def guard(handler: Handler) -> Handler:
    """Maps the emulator's own exceptions to JSON errors instead of 500 pages."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except KeyError as exc:
            return web.json_response({"error": f"not found: {exc}"}, status=404)
        except LookupError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    return wrapped


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (an empty one without a body)."""
    if not request.can_read_body:
        return {}
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def optional(body: dict[str, Any], name: str) -> str | None:
    """A string field that may be absent or null."""
    value = body.get(name)
    return None if value is None else str(value)


E = TypeVar("E", bound="EmulatorServer[Any, Any, Any, Any]")


class ControlPlane(Generic[E]):
    """The routes every platform offers; a platform adds its own and names its fields."""

    app_field = "app_id"  # the app id in bodies and queries
    chat_field = "chat_id"  # the chat id of a sent message and of the /chat query
    card_field = "card_id"  # the card id in `cards/{...}`
    ack_field = "message_id"  # what /acks filters on

    def __init__(self, emu: E) -> None:
        self.emu = emu
        params = list(inspect.signature(emu.send_user_message).parameters)
        self.message_fields = set(params[1:])  # all but the app id

    def routes(self) -> list[Route]:
        """Method, path and handler of every route."""
        return [
            ("POST", "messages", self.message),
            ("GET", "chat", self.chat),
            ("GET", "cards", self.cards),
            ("GET", f"cards/{{{self.card_field}}}", self.card),
            ("GET", "calls", self.calls),
            ("GET", "acks", self.acks),
            ("GET", "connections", self.connections),
            ("GET", "faults", self.faults),
            ("POST", "faults", self.faults),
            ("DELETE", "faults", self.faults),
            ("POST", "latency", self.latency),
            ("POST", "connections/drop", self.drop),
            ("POST", "connections/silence", self.silence),
            ("POST", "tokens/expire", self.expire_tokens),
        ]

    def add_routes(self, app: web.Application) -> None:
        """Registers every route under `/_emulator/`."""
        for method, path, handler in self.routes():
            app.router.add_route(method, CONTROL_PREFIX + path, guard(handler))

    def add_fault(self, body: dict[str, Any]) -> Any:
        """Injects the fault a POST /faults body describes; returns it."""
        return self.emu.add_fault(
            str(body["path"]),
            body.get("status"),
            times=body.get("times", 1),
            delay=float(body.get("delay", 0.0)),
            method=body.get("method"),
            **self.fault_options(body),
        )

    def fault_options(self, body: dict[str, Any]) -> dict[str, Any]:
        """The platform's own fields of a POST /faults body, as `add_fault` options."""
        return {}

    def drop_options(self, body: dict[str, Any]) -> dict[str, Any]:
        """Platform options of POST /connections/drop."""
        return {}

    async def message(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        app_id = str(body.pop(self.app_field, ""))
        if app_id not in self.emu.state.apps:
            raise KeyError(app_id)
        unknown = set(body) - self.message_fields
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        result = (await self.emu.send_user_message(app_id, **body)).to_json()
        view = self.emu.chat_view(result[self.chat_field]) or {}
        return web.json_response({**result, "version": view.get("version", 0)})

    async def chat(self, request: web.Request) -> web.Response:
        chat_id = request.query[self.chat_field]
        since = int(request.query.get("since", -1))
        wait = min(max(float(request.query.get("wait", 0.0)), 0.0), MAX_WAIT)

        def changed(emu: E) -> dict[str, Any] | None:
            view = emu.chat_view(chat_id)
            return view if view is not None and view["version"] > since else None

        view = changed(self.emu)
        if view is None and wait > 0:
            try:
                view = await self.emu.wait_until(changed, wait)
            except TimeoutError:
                view = None
        if view is None:
            view = self.emu.chat_view(chat_id)
        if view is None:
            raise KeyError(chat_id)
        return web.json_response(view)

    async def cards(self, request: web.Request) -> web.Response:
        return web.json_response([c.to_json() for c in self.emu.cards()])

    async def card(self, request: web.Request) -> web.Response:
        card = self.emu.card(request.match_info[self.card_field])
        if card is None:
            raise KeyError(request.match_info[self.card_field])
        return web.json_response(card.to_json())

    async def calls(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", 0))
        calls = [
            asdict(c)
            for c in self.emu.calls(request.query.get("path"), request.query.get("method"))
            if c.seq > since
        ]
        return web.json_response(calls)

    async def acks(self, request: web.Request) -> web.Response:
        acks = self.emu.acks(request.query.get(self.ack_field))
        return web.json_response([asdict(a) for a in acks])

    async def connections(self, request: web.Request) -> web.Response:
        infos = self.emu.connections(request.query.get(self.app_field))
        return web.json_response([c.to_json() for c in infos])

    async def faults(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            return web.json_response(self.add_fault(await json_body(request)).to_json())
        if request.method == "DELETE":
            self.emu.clear_faults()
        return web.json_response([f.to_json() for f in self.emu.state.faults])

    async def latency(self, request: web.Request) -> web.Response:
        self.emu.set_latency(float((await json_body(request))["seconds"]))
        return web.json_response({"latency": self.emu.state.latency})

    async def drop(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        count = await self.emu.drop(
            optional(body, self.app_field),
            mode=str(body.get("mode", "abort")),
            connection_id=optional(body, "connection_id"),
            **self.drop_options(body),
        )
        return web.json_response({"connections": count})

    async def silence(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        count = self.emu.silence(
            optional(body, self.app_field),
            bool(body.get("on", True)),
            connection_id=optional(body, "connection_id"),
        )
        return web.json_response({"connections": count})

    async def expire_tokens(self, request: web.Request) -> web.Response:
        return web.json_response({"expired": self.emu.expire_tokens()})

    async def downtime(self, request: web.Request) -> web.Response:
        """POST /downtime, on the platforms that list it: every API call fails for a while."""
        body = await json_body(request)
        fault = self.emu.downtime(float(body["seconds"]), int(body.get("status", 503)))
        return web.json_response(fault.to_json())
