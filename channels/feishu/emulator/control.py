"""The Feishu emulator's control plane under `/_emulator/`: JSON in, JSON out, for other processes.

The routes mirror the DingTalk emulator's: simulate users, read chats and cards (long-poll with
`since`/`wait`), inspect calls, acks and connections, inject faults.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from channels.emulator.control import CONTROL_PREFIX, MAX_WAIT, Handler, guard, json_body

if TYPE_CHECKING:
    from channels.feishu.emulator.server import FeishuEmulator


def _optional(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return None if value is None else str(value)


class _Control:
    def __init__(self, emu: FeishuEmulator) -> None:
        self.emu = emu
        params = inspect.signature(emu.send_user_message).parameters
        self.message_fields = {name for name in params if name != "app_id"}

    async def state(self, request: web.Request) -> web.Response:
        state = self.emu.state
        return web.json_response(
            {
                "url": self.emu.url,
                "apps": [
                    {"app_id": a.app_id, "bot_open_id": a.bot_open_id, "bot_name": a.bot_name}
                    for a in state.apps.values()
                ],
                "client_config": self.emu.gateway.wire_config(),
                "chats": list(state.chats),
                "version": state.version,
            }
        )

    async def message(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        app_id = str(body.pop("app_id", ""))
        if app_id not in self.emu.state.apps:
            raise KeyError(app_id)
        unknown = set(body) - self.message_fields
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        result = await self.emu.send_user_message(app_id, **body)
        view = self.emu.chat_view(result.chat_id) or {}
        return web.json_response({**result.to_json(), "version": view.get("version", 0)})

    async def event(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        payload = body["payload"]
        if not isinstance(payload, dict):
            raise ValueError("payload must be a JSON object")
        sent = await self.emu.push_event(
            str(body["app_id"]),
            payload,
            parts=int(body.get("parts", 1)),
            connection_id=_optional(body, "connection_id"),
            redeliver=bool(body.get("redeliver", True)),
        )
        return web.json_response(asdict(sent))

    async def redeliver(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        sent = await self.emu.redeliver(
            str(body["message_id"]), bool(body.get("new_event_id", True))
        )
        return web.json_response(asdict(sent))

    async def chat(self, request: web.Request) -> web.Response:
        chat_id = request.query["chat_id"]
        since = int(request.query.get("since", -1))
        wait = min(max(float(request.query.get("wait", 0.0)), 0.0), MAX_WAIT)

        def changed(emu: FeishuEmulator) -> dict[str, Any] | None:
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
        card = self.emu.card(request.match_info["card_id"])
        if card is None:
            raise KeyError(request.match_info["card_id"])
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
        acks = self.emu.acks(request.query.get("frame_message_id"))
        return web.json_response([asdict(a) for a in acks])

    async def connections(self, request: web.Request) -> web.Response:
        infos = self.emu.connections(request.query.get("app_id"))
        return web.json_response([c.to_json() for c in infos])

    async def faults(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await json_body(request)
            fault = self.emu.add_fault(
                str(body["path"]),
                body.get("status"),
                code=body.get("code"),
                msg=str(body.get("msg", "")),
                times=body.get("times", 1),
                method=body.get("method"),
                delay=float(body.get("delay", 0.0)),
            )
            return web.json_response(fault.to_json())
        if request.method == "DELETE":
            self.emu.clear_faults()
        return web.json_response([f.to_json() for f in self.emu.state.faults])

    async def handshakes(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.emu.reject_handshakes(
            int(body.get("status", 514)),
            int(body.get("autherrcode", 1000040350)),
            times=int(body.get("times", 1)),
            msg=str(body.get("msg", "")),
        )
        return web.json_response({"pending": len(self.emu.gateway.rejections)})

    async def latency(self, request: web.Request) -> web.Response:
        self.emu.set_latency(float((await json_body(request))["seconds"]))
        return web.json_response({"latency": self.emu.state.latency})

    async def drop(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        count = await self.emu.drop(
            _optional(body, "app_id"),
            mode=str(body.get("mode", "abort")),
            code=int(body.get("code", 1000)),
            connection_id=_optional(body, "connection_id"),
        )
        return web.json_response({"connections": count})

    async def silence(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        count = self.emu.silence(
            _optional(body, "app_id"),
            bool(body.get("on", True)),
            connection_id=_optional(body, "connection_id"),
        )
        return web.json_response({"connections": count})

    async def refuse(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.emu.refuse_connections(_optional(body, "app_id"), bool(body.get("on", True)))
        return web.json_response({"refused": sorted(str(a) for a in self.emu.gateway.refused)})

    async def client_config(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        return web.json_response(self.emu.set_client_config(**body))

    async def expire_tokens(self, request: web.Request) -> web.Response:
        return web.json_response({"expired": self.emu.expire_tokens()})


def add_control_routes(app: web.Application, emu: FeishuEmulator) -> None:
    """Registers `/_emulator/...` routes driving `emu`."""
    c = _Control(emu)
    p = CONTROL_PREFIX
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "state", c.state),
        ("POST", "messages", c.message),
        ("POST", "events", c.event),
        ("POST", "redeliver", c.redeliver),
        ("GET", "chat", c.chat),
        ("GET", "cards", c.cards),
        ("GET", "cards/{card_id}", c.card),
        ("GET", "calls", c.calls),
        ("GET", "acks", c.acks),
        ("GET", "connections", c.connections),
        ("GET", "faults", c.faults),
        ("POST", "faults", c.faults),
        ("DELETE", "faults", c.faults),
        ("POST", "handshakes/reject", c.handshakes),
        ("POST", "latency", c.latency),
        ("POST", "connections/drop", c.drop),
        ("POST", "connections/silence", c.silence),
        ("POST", "connections/refuse", c.refuse),
        ("POST", "client_config", c.client_config),
        ("POST", "tokens/expire", c.expire_tokens),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, p + path, guard(handler))
