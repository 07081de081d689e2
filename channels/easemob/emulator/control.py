"""The Easemob emulator's `/_emulator/` routes beyond the shared ones: pre-send timings, post-send
attempts, token requests, users, stored messages, and the callback rule and rewrite switch."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from aiohttp import web

from channels.emulator.control import ControlPlane, Route, json_body, optional

if TYPE_CHECKING:
    # named in a string below (the server imports this module at runtime)
    from channels.easemob.emulator.server import EasemobEmulator  # noqa: F401


class Control(ControlPlane["EasemobEmulator"]):
    """Drives an `EasemobEmulator` for other processes."""

    app_field = "bot_user"
    chat_field = "chat_id"
    card_field = "msg_id"  # a rewritable bot message is found by its msg_id
    ack_field = "msg_id"  # the post-send callbacks of this message

    def routes(self) -> list[Route]:
        return [
            ("GET", "state", self.state),
            *super().routes(),
            ("GET", "presend", self.presend),
            ("GET", "postsend", self.postsend),
            ("GET", "tokens", self.tokens),
            ("GET", "users", self.users),
            ("GET", "stored/{msg_id}", self.stored),
            ("GET", "callback", self.callback),
            ("POST", "callback", self.callback),
            ("POST", "settle", self.settle),
        ]

    def fault_options(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "error": str(body.get("error", "")),
            "description": str(body.get("description", "")),
            "retry_after": body.get("retry_after"),
        }

    async def state(self, request: web.Request) -> web.Response:
        emu = self.emu
        return web.json_response(
            {
                "url": emu.url,
                "appkey": emu.api.appkey,
                "apps": [{"bot_user": bot.bot_user} for bot in emu.state.apps.values()],
                "callback": emu.sender.url,
                "callbacks": emu.callbacks,
                "presend_wait_ms": emu.sender.wait * 1000,
                "rewrite": emu.messaging.rewrite_enabled,
                "chats": list(emu.state.chats),
                "token_requests": len(emu.state.token_requests),
                "version": emu.state.version,
            }
        )

    async def presend(self, request: web.Request) -> web.Response:
        calls = self.emu.presends(request.query.get("msg_id"))
        return web.json_response([dataclasses.asdict(c) for c in calls])

    async def postsend(self, request: web.Request) -> web.Response:
        attempts = self.emu.postsends(request.query.get("msg_id"))
        return web.json_response([{**dataclasses.asdict(a), "ok": a.ok} for a in attempts])

    async def tokens(self, request: web.Request) -> web.Response:
        return web.json_response([dataclasses.asdict(t) for t in self.emu.token_requests()])

    async def users(self, request: web.Request) -> web.Response:
        return web.json_response(self.emu.users())

    async def stored(self, request: web.Request) -> web.Response:
        msg_id = request.match_info["msg_id"]
        message = self.emu.message(msg_id)
        if message is None:
            raise KeyError(msg_id)
        return web.json_response(message)

    async def callback(self, request: web.Request) -> web.Response:
        emu = self.emu
        if request.method == "POST":
            body = await json_body(request)
            wait_ms = body.get("presend_wait_ms")
            emu.set_callback(
                optional(body, "url"),
                optional(body, "secret"),
                None if wait_ms is None else float(wait_ms) / 1000,
            )
            if "rewrite" in body:
                emu.set_rewrite(bool(body["rewrite"]))
        return web.json_response(
            {
                "url": emu.sender.url,
                "presend_wait_ms": emu.sender.wait * 1000,
                "rewrite": emu.messaging.rewrite_enabled,
            }
        )

    async def settle(self, request: web.Request) -> web.Response:
        self.emu.settle()
        return web.json_response({"settled": len(self.emu.cards())})
