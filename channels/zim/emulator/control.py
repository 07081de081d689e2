"""The ZIM emulator's `/_emulator/` routes beyond the shared ones: robots, callbacks (their
attempts and URL), rate-limit refusals and API downtimes."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from channels.emulator.control import ControlPlane, Route, json_body, optional

if TYPE_CHECKING:
    # named in a string below (the server imports this module at runtime)
    from channels.zim.emulator.server import ZimEmulator  # noqa: F401


class Control(ControlPlane["ZimEmulator"]):
    """Drives a `ZimEmulator` for other processes."""

    app_field = "robot_id"
    chat_field = "chat_id"
    card_field = "msg_id"  # a robot's message, with its edits
    ack_field = "msg_id"  # the callback POSTs that carried this message

    def routes(self) -> list[Route]:
        return [
            ("GET", "state", self.state),
            *super().routes(),
            ("GET", "robots", self.robots),
            ("GET", "callbacks", self.callbacks),
            ("POST", "callbacks", self.callbacks),
            ("GET", "refusals", self.refusals),
            ("POST", "downtime", self.downtime),
        ]

    def add_fault(self, body: dict[str, Any]) -> Any:
        return super().add_fault({"path": "/", **body})  # every action is POST /

    def fault_options(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "action": optional(body, "action"),
            "code": body.get("code"),
            "message": str(body.get("message", "")),
        }

    async def state(self, request: web.Request) -> web.Response:
        emu = self.emu
        return web.json_response(
            {
                "url": emu.url,
                "app_id": emu.app_id,
                "apps": [
                    {"robot_id": r.robot_id, "registered": r.registered, "name": r.name}
                    for r in emu.state.apps.values()
                ],
                "callback": emu.callbacks.url,
                "callback_mode": emu.callback_mode,
                "chats": list(emu.state.chats),
                "refusals": len(emu.state.refusals),
                "version": emu.state.version,
            }
        )

    async def robots(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(r) for r in self.emu.robots()])

    async def callbacks(self, request: web.Request) -> web.Response:
        emu = self.emu
        if request.method == "POST":
            url = optional(await json_body(request), "url")
            if url is not None:
                emu.set_callback(url)
        attempts = emu.callback_attempts(request.query.get("msg_id"), request.query.get("event"))
        return web.json_response(
            {"url": emu.callbacks.url, "attempts": [{**asdict(a), "ok": a.ok} for a in attempts]}
        )

    async def refusals(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(r) for r in self.emu.refusals()])
