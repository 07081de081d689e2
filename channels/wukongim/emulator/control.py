"""The WuKongIM emulator's `/_emulator/` routes beyond the shared ones: the webhook (its pushes,
pausing, flushing, its address), redelivery, message events and API downtimes."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from channels.emulator.control import ControlPlane, Route, json_body, optional

if TYPE_CHECKING:
    # named in a string below (the server imports this module at runtime)
    from channels.wukongim.emulator.server import WuKongIMEmulator  # noqa: F401


class Control(ControlPlane["WuKongIMEmulator"]):
    """Drives a `WuKongIMEmulator` for other processes."""

    app_field = "bot_uid"
    chat_field = "chat_id"
    card_field = "message_id"  # a streamed answer is found by its anchor's message_idstr
    ack_field = "message_id"  # the webhook pushes that carried this message

    def routes(self) -> list[Route]:
        return [
            ("GET", "state", self.state),
            *super().routes(),
            ("POST", "redeliver", self.redeliver),
            ("GET", "webhook", self.webhook),
            ("POST", "webhook", self.webhook),
            ("GET", "events", self.message_events),
            ("POST", "downtime", self.downtime),
        ]

    def fault_options(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"msg": str(body.get("msg", "")), "retry_after": body.get("retry_after")}

    async def state(self, request: web.Request) -> web.Response:
        emu = self.emu
        return web.json_response(
            {
                "url": emu.url,
                "apps": [{"bot_uid": bot.bot_uid} for bot in emu.state.apps.values()],
                "server_version": emu.api.version,
                "webhook": emu.webhook.url,
                "chats": list(emu.state.chats),
                "version": emu.state.version,
            }
        )

    async def redeliver(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        ids = body.get("message_ids")
        if not isinstance(ids, list) or not ids:
            raise ValueError("message_ids must be a non-empty list")
        return web.json_response({"queued": self.emu.redeliver(ids)})

    async def webhook(self, request: web.Request) -> web.Response:
        emu = self.emu
        if request.method == "POST":
            body = await json_body(request)
            url = optional(body, "url")
            if url is not None:
                emu.set_webhook(url)
            if "paused" in body:
                emu.pause_webhook(bool(body["paused"]))
            if body.get("flush"):
                emu.flush_webhook()
        message_id = request.query.get("message_id")
        return web.json_response(
            {
                "url": emu.webhook.url,
                "paused": emu.webhook.paused,
                "pending": [str(m.message_id) for m in emu.webhook.pending],
                "pushes": [{**asdict(a), "ok": a.ok} for a in emu.pushes(message_id)],
            }
        )

    async def message_events(self, request: web.Request) -> web.Response:
        records = self.emu.events(request.query.get("client_msg_no"))
        return web.json_response([asdict(r) for r in records])
