"""The DingTalk emulator's `/_emulator/` routes beyond the shared ones: Stream frames, SYSTEM
disconnects, gateway outages, expired sessionWebhooks, failing card deliveries, and the members
the contacts API knows with what apps may read of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from channels.dingtalk.emulator.state import EmulatedUser, Fault
from channels.emulator.control import ControlPlane, Route, json_body, optional

if TYPE_CHECKING:
    # named in a string below (the server imports this module at runtime)
    from channels.dingtalk.emulator.server import DingTalkEmulator  # noqa: F401


def _sent(connection_id: str, delivered: bool) -> web.Response:
    return web.json_response({"connection_id": connection_id, "delivered": delivered})


class Control(ControlPlane["DingTalkEmulator"]):
    """Drives a `DingTalkEmulator` for other processes."""

    app_field = "client_id"
    chat_field = "conversation_id"
    card_field = "out_track_id"
    ack_field = "message_id"

    def routes(self) -> list[Route]:
        return [
            ("GET", "state", self.state),
            *super().routes(),
            ("GET", "frames", self.sent_frames),
            ("POST", "frames", self.frame),
            ("POST", "redeliver", self.redeliver),
            ("POST", "connections/disconnect", self.disconnect),
            ("POST", "gateway/outage", self.outage),
            ("POST", "sessions/expire", self.expire_sessions),
            ("POST", "deliveries/fail", self.fail_deliveries),
            ("GET", "users", self.users),
            ("POST", "users", self.add_user),
            ("POST", "users/access", self.profile_access),
        ]

    def add_fault(self, body: dict[str, Any]) -> Fault:
        return self.emu.add_fault(
            str(body["path"]),
            body.get("status"),
            times=body.get("times", 1),
            body=body.get("body"),
            retry_after=body.get("retry_after"),
            latency=float(body.get("latency", 0.0)),
            method=body.get("method"),
        )

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
                "conversations": list(state.chats),
                "version": state.version,
            }
        )

    async def frame(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        sent = await self.emu.push_frame(
            str(body["client_id"]), dict(body["frame"]), connection_id=body.get("connection_id")
        )
        return _sent(sent.connection_id, sent.delivered)

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
        return _sent(sent.connection_id, sent.delivered)

    async def disconnect(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        count = await self.emu.system_disconnect(
            str(body["client_id"]),
            str(body.get("reason", "persistent connection is timeout")),
            grace=body.get("grace"),
            connection_id=optional(body, "connection_id"),
        )
        return web.json_response({"connections": count})

    async def outage(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        count = await self.emu.gateway_outage(bool(body.get("on", True)))
        return web.json_response({"connections": count, "down": self.emu.gateway.down})

    async def expire_sessions(self, request: web.Request) -> web.Response:
        return web.json_response({"expired": self.emu.expire_sessions()})

    async def fail_deliveries(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.emu.fail_deliveries(
            int(body.get("times", 1)), str(body.get("error_msg", "robot is not in the group"))
        )
        return web.json_response({"pending": len(self.emu.state.failing_deliveries)})

    def _users(self) -> web.Response:
        state = self.emu.state
        return web.json_response(
            {
                "access": state.profile_access,
                "users": [user.to_json() for user in state.users.values()],
            }
        )

    async def users(self, request: web.Request) -> web.Response:
        return self._users()

    async def add_user(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        user = EmulatedUser.default(str(body["staff_id"]), str(body.get("name", "")))
        for key in ("email", "mobile", "job_number"):  # made up unless given ("" for none)
            if key in body:
                setattr(user, key, str(body[key]))
        self.emu.add_user(user)
        return self._users()

    async def profile_access(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.emu.set_profile_access(str(body.get("access", "none")))  # ValueError: a 400
        return self._users()
