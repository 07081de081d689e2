"""The emulator's control plane under `/_emulator/`: JSON in, JSON out, for other processes.

`channeld chat` and benchmarks drive the emulator through it: simulate users, read chats and
cards (long-poll with `since`/`wait`), inspect calls, acks and connections, inject faults.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from channels.emulator.control import CONTROL_PREFIX, MAX_WAIT, Handler, guard, json_body

if TYPE_CHECKING:
    from channels.dingtalk.emulator.server import DingTalkEmulator


def _float(request: web.Request, name: str, default: float) -> float:
    return float(request.query.get(name, default))


class _Control:
    def __init__(self, emu: DingTalkEmulator) -> None:
        self.emu = emu
        params = inspect.signature(emu.send_user_message).parameters
        self.message_fields = {name for name in params if name != "client_id"}

    async def state(self, request: web.Request) -> web.Response:
        state = self.emu.state
        return web.json_response(
            {
                "url": self.emu.url,
                "apps": [
                    {"client_id": a.client_id, "robot_code": a.effective_robot_code}
                    for a in state.apps.values()
                ],
                "templates": state.templates,
                "conversations": list(state.conversations),
                "version": state.version,
            }
        )

    async def message(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        client_id = str(body.pop("client_id", ""))
        if client_id not in self.emu.state.apps:
            raise KeyError(client_id)
        unknown = set(body) - self.message_fields
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        result = await self.emu.send_user_message(client_id, **body)
        view = self.emu.chat_view(result.conversation_id) or {}
        return web.json_response({**result.to_json(), "version": view.get("version", 0)})

    async def frame(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        sent = await self.emu.push_frame(
            str(body["client_id"]), dict(body["frame"]), connection_id=body.get("connection_id")
        )
        return web.json_response({"connection_id": sent.connection_id, "delivered": sent.delivered})

    async def sent_frames(self, request: web.Request) -> web.Response:
        frames = self.emu.sent_frames(request.query.get("topic"))
        return web.json_response(
            [
                {
                    "message_id": f.message_id,
                    "client_id": f.client_id,
                    "connection_id": f.connection_id,
                    "at": f.at,
                    "topic": f.topic,
                    "delivered": f.delivered,
                }
                for f in frames
            ]
        )

    async def redeliver(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        sent = await self.emu.redeliver(str(body["message_id"]))
        return web.json_response({"connection_id": sent.connection_id, "delivered": sent.delivered})

    async def chat(self, request: web.Request) -> web.Response:
        conversation_id = request.query["conversation_id"]
        since = int(request.query.get("since", -1))
        wait = min(max(_float(request, "wait", 0.0), 0.0), MAX_WAIT)

        def changed(emu: DingTalkEmulator) -> dict[str, Any] | None:
            view = emu.chat_view(conversation_id)
            return view if view is not None and view["version"] > since else None

        view = changed(self.emu)
        if view is None and wait > 0:
            try:
                view = await self.emu.wait_until(changed, wait)
            except TimeoutError:
                view = None
        if view is None:
            view = self.emu.chat_view(conversation_id)
        if view is None:
            raise KeyError(conversation_id)
        return web.json_response(view)

    async def cards(self, request: web.Request) -> web.Response:
        return web.json_response([c.to_json() for c in self.emu.cards()])

    async def card(self, request: web.Request) -> web.Response:
        card = self.emu.card(request.match_info["out_track_id"])
        if card is None:
            raise KeyError(request.match_info["out_track_id"])
        return web.json_response(card.to_json())

    async def calls(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", 0))
        path = request.query.get("path")
        calls = [asdict(c) for c in self.emu.calls(path) if c.seq > since]
        return web.json_response(calls)

    async def acks(self, request: web.Request) -> web.Response:
        acks = self.emu.acks(request.query.get("message_id"))
        return web.json_response([asdict(a) for a in acks])

    async def connections(self, request: web.Request) -> web.Response:
        infos = self.emu.connections(request.query.get("client_id"))
        return web.json_response([c.to_json() for c in infos])

    async def faults(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await json_body(request)
            fault = self.emu.add_fault(
                str(body["path"]),
                body.get("status"),
                times=body.get("times", 1),
                body=body.get("body"),
                retry_after=body.get("retry_after"),
                latency=float(body.get("latency", 0.0)),
                method=body.get("method"),
            )
            return web.json_response(fault.to_json())
        if request.method == "DELETE":
            self.emu.clear_faults()
        return web.json_response([f.to_json() for f in self.emu.state.faults])

    async def latency(self, request: web.Request) -> web.Response:
        self.emu.set_latency(float((await json_body(request))["seconds"]))
        return web.json_response({"latency": self.emu.state.latency})

    async def drop(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        count = await self.emu.drop(
            str(body["client_id"]),
            mode=str(body.get("mode", "abort")),
            connection_id=body.get("connection_id"),
        )
        return web.json_response({"connections": count})

    async def disconnect(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        count = await self.emu.system_disconnect(
            str(body["client_id"]),
            str(body.get("reason", "persistent connection is timeout")),
            grace=body.get("grace"),
            connection_id=body.get("connection_id"),
        )
        return web.json_response({"connections": count})

    async def silence(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        count = self.emu.silence(
            str(body["client_id"]),
            bool(body.get("on", True)),
            connection_id=body.get("connection_id"),
        )
        return web.json_response({"connections": count})

    async def outage(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        count = await self.emu.gateway_outage(bool(body.get("on", True)))
        return web.json_response({"connections": count, "down": self.emu.gateway.down})

    async def expire_tokens(self, request: web.Request) -> web.Response:
        return web.json_response({"expired": self.emu.expire_tokens()})

    async def expire_sessions(self, request: web.Request) -> web.Response:
        return web.json_response({"expired": self.emu.expire_sessions()})

    async def fail_deliveries(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.emu.fail_deliveries(
            int(body.get("times", 1)), str(body.get("error_msg", "robot is not in the group"))
        )
        return web.json_response({"pending": len(self.emu.state.failing_deliveries)})


def add_control_routes(app: web.Application, emu: DingTalkEmulator) -> None:
    """Registers `/_emulator/...` routes driving `emu`."""
    c = _Control(emu)
    p = CONTROL_PREFIX
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "state", c.state),
        ("POST", "messages", c.message),
        ("GET", "frames", c.sent_frames),
        ("POST", "frames", c.frame),
        ("POST", "redeliver", c.redeliver),
        ("GET", "chat", c.chat),
        ("GET", "cards", c.cards),
        ("GET", "cards/{out_track_id}", c.card),
        ("GET", "calls", c.calls),
        ("GET", "acks", c.acks),
        ("GET", "connections", c.connections),
        ("GET", "faults", c.faults),
        ("POST", "faults", c.faults),
        ("DELETE", "faults", c.faults),
        ("POST", "latency", c.latency),
        ("POST", "connections/drop", c.drop),
        ("POST", "connections/disconnect", c.disconnect),
        ("POST", "connections/silence", c.silence),
        ("POST", "gateway/outage", c.outage),
        ("POST", "tokens/expire", c.expire_tokens),
        ("POST", "sessions/expire", c.expire_sessions),
        ("POST", "deliveries/fail", c.fail_deliveries),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, p + path, guard(handler))
