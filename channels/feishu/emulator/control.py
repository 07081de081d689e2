"""The Feishu emulator's `/_emulator/` routes beyond the shared ones: raw events, redelivery,
handshake rejections, gateway refusals, the ClientConfig handed to clients, and the contacts
(users and the permission-denied mode)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from channels.emulator.control import ControlPlane, Route, json_body, optional

if TYPE_CHECKING:
    # named in a string below (the server imports this module at runtime)
    from channels.feishu.emulator.server import FeishuEmulator  # noqa: F401


class Control(ControlPlane["FeishuEmulator"]):
    """Drives a `FeishuEmulator` for other processes."""

    app_field = "app_id"
    chat_field = "chat_id"
    card_field = "card_id"
    ack_field = "frame_message_id"

    def routes(self) -> list[Route]:
        return [
            ("GET", "state", self.state),
            *super().routes(),
            ("POST", "events", self.event),
            ("POST", "redeliver", self.redeliver),
            ("POST", "handshakes/reject", self.handshakes),
            ("POST", "connections/refuse", self.refuse),
            ("POST", "client_config", self.client_config),
            ("POST", "contact/denied", self.contact_denied),
            ("POST", "contact/users", self.contact_user),
        ]

    def fault_options(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"code": body.get("code"), "msg": str(body.get("msg", ""))}

    def drop_options(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"code": int(body.get("code", 1000))}

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

    async def event(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        payload = body["payload"]
        if not isinstance(payload, dict):
            raise ValueError("payload must be a JSON object")
        sent = await self.emu.push_event(
            str(body["app_id"]),
            payload,
            parts=int(body.get("parts", 1)),
            connection_id=optional(body, "connection_id"),
            redeliver=bool(body.get("redeliver", True)),
        )
        return web.json_response(asdict(sent))

    async def redeliver(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        sent = await self.emu.redeliver(
            str(body["message_id"]), bool(body.get("new_event_id", True))
        )
        return web.json_response(asdict(sent))

    async def handshakes(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.emu.reject_handshakes(
            int(body.get("status", 514)),
            int(body.get("autherrcode", 1000040350)),
            times=int(body.get("times", 1)),
            msg=str(body.get("msg", "")),
        )
        return web.json_response({"pending": len(self.emu.gateway.rejections)})

    async def refuse(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.emu.refuse_connections(optional(body, "app_id"), bool(body.get("on", True)))
        return web.json_response({"refused": sorted(str(a) for a in self.emu.gateway.refused)})

    async def client_config(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        return web.json_response(self.emu.set_client_config(**body))

    async def contact_denied(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        return web.json_response({"denied": self.emu.contact.deny(optional(body, "denied"))})

    async def contact_user(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        open_id = str(body.pop("open_id", ""))
        fields = {str(k): str(v) for k, v in body.items()}
        return web.json_response(asdict(self.emu.contact.add_user(open_id, **fields)))
