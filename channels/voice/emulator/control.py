"""The voice emulator's `/_emulator/` routes, JSON in and out, the same for both clouds.

Under `/_emulator/voice/`: `GET calls` (every instance with its rounds), `GET requests` (every
LLM request the agent sent, bearer tokens masked), `POST say`, `POST repeat`, `POST interrupt`,
`POST hangup`, `GET|POST console` (the cloud console's settings) and `GET callbacks` (every
callback POST and its answer). Beside them the base's `GET state`, `GET calls` (the API calls
the cloud answered), `faults` and `latency`. `instance_id` defaults to the latest active call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from channels.emulator.control import ControlPlane, Route, json_body, optional

if TYPE_CHECKING:
    # named in a string below (the server imports this module when it adds its routes)
    from channels.voice.emulator.server import VoiceEmulator  # noqa: F401


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


class VoiceControl(ControlPlane["VoiceEmulator"]):
    """Drives a `VoiceEmulator` for other processes (`channeld chat --voice`, tests)."""

    app_field = "agent_id"

    def routes(self) -> list[Route]:
        return [
            ("GET", "state", self.state),
            ("GET", "calls", self.calls),
            ("GET", "faults", self.faults),
            ("POST", "faults", self.faults),
            ("DELETE", "faults", self.faults),
            ("POST", "latency", self.latency),
            ("GET", "voice/calls", self.voice_calls),
            ("GET", "voice/requests", self.requests),
            ("POST", "voice/say", self.say),
            ("POST", "voice/repeat", self.repeat),
            ("POST", "voice/interrupt", self.interrupt),
            ("POST", "voice/hangup", self.hangup),
            ("GET", "voice/console", self.console),
            ("POST", "voice/console", self.console),
            ("GET", "voice/callbacks", self.callbacks),
        ]

    async def state(self, request: web.Request) -> web.Response:
        emu = self.emu
        return web.json_response(
            {
                "kind": "voice",  # `channeld chat` switches to its voice mode on this
                "provider": emu.provider,
                "url": emu.url,
                "apps": [{self.app_field: agent} for agent in emu.state.apps],
                "active_calls": sum(c.active for c in emu.state.instances.values()),
                "console": emu.console_view(),
                "version": emu.state.version,
            }
        )

    async def voice_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"provider": self.emu.provider, "calls": self.emu.instances()})

    async def requests(self, request: web.Request) -> web.Response:
        found = self.emu.llm_requests(request.query.get("instance_id"))
        return web.json_response([r.to_json() for r in found])

    async def say(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        result = await self.emu.say(
            _text(body, "text"),
            instance_id=optional(body, "instance_id"),
            unseen=_flag(body, "unseen"),
            answer=str(body.get("answer", "")),
        )
        return web.json_response(result)

    async def repeat(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        return web.json_response(await self.emu.repeat(optional(body, "instance_id")))

    async def interrupt(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        played = body.get("played_chars")
        if isinstance(played, bool) or not isinstance(played, int):
            raise ValueError("played_chars must be a whole number")
        turn = await self.emu.interrupt(played, instance_id=optional(body, "instance_id"))
        return web.json_response(turn)

    async def hangup(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        return web.json_response(await self.emu.hangup(optional(body, "instance_id")))

    async def console(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            return web.json_response(self.emu.set_console(**await json_body(request)))
        return web.json_response(self.emu.console_view())

    async def callbacks(self, request: web.Request) -> web.Response:
        attempts = self.emu.callback_attempts(
            request.query.get("event"), request.query.get("instance_id")
        )
        return web.json_response([a.to_json() for a in attempts])
