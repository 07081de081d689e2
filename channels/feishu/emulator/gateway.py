"""The emulator's long-connection gateway: discovery, `/ws/v2`, pings, event pushes and faults.

Choices docs/platforms/feishu.md has no answer for (unverified against the gateway; its §6):
* A bad, used or expired ticket is refused like an auth failure the SDK retries:
  `handshake-status: 514` with `handshake-autherrcode: 1000040345`.
* Wrong credentials at discovery answer HTTP 200 with code 10014 ("app secret invalid"); any code
  other than 0, 1 and 1000040343 is fatal for lark-oapi 1.7.5, which is what matters.
* A gateway that is down answers discovery with HTTP 503 and handshakes with a bare HTTP 503
  (no handshake headers): both are retryable for the SDK.
* Undecodable client frames are ignored. A silenced socket stays open but answers no ping and
  gets no event (a half-open connection as seen from the client).
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMessage, WSMsgType, web

from channels.emulator.gateway import GatewayBase, Socket, SocketInfo
from channels.emulator.http import APP_KEY
from channels.feishu import frames
from channels.feishu.emulator.events import EventPusher
from channels.feishu.emulator.state import DISCOVERY_PATH, AckRecord, EmulatorState

WS_PATH = "/ws/v2"
AUTH_FAILED = 514
FORBIDDEN = 403
EXCEED_CONN_LIMIT = 1000040350
BAD_TICKET = 1000040345


@dataclass(frozen=True, slots=True)
class ConnectionInfo(SocketInfo):
    """A snapshot of one long connection (`connection_id` is the URL's device_id)."""

    app_id: str
    service_id: int
    pings: int  # pings received from the client
    pongs: int
    events_sent: int  # data frames (parts) sent


@dataclass(frozen=True, slots=True)
class _Ticket:
    app_id: str
    device_id: str
    service_id: int
    issued_at: float


class Connection(Socket):
    """One server-side socket and what it has seen."""

    def __init__(self, ticket: _Ticket, request: web.Request) -> None:
        super().__init__(ticket.device_id, ticket.app_id, request)
        self.service_id = ticket.service_id
        self.pings = 0
        self.pongs = 0
        self.events_sent = 0

    def info(self) -> ConnectionInfo:
        """A snapshot for observers."""
        return ConnectionInfo(
            **self.snapshot(),
            app_id=self.app_id,
            service_id=self.service_id,
            pings=self.pings,
            pongs=self.pongs,
            events_sent=self.events_sent,
        )


class Gateway(GatewayBase[Connection, _Ticket]):
    """Serves discovery and `/ws/v2`, and drives the sockets."""

    def __init__(
        self,
        state: EmulatorState,
        *,
        client_config: frames.ClientConfig,
        redelivery_schedule: Sequence[float],
        max_connections: int,
        ticket_ttl: float,
        rng: random.Random,
    ) -> None:
        super().__init__(state, ticket_ttl=ticket_ttl, rng=rng)
        self._state: EmulatorState = state
        self.client_config = client_config
        self.max_connections = max_connections
        self.refused: set[str | None] = set()  # app ids whose gateway is down; None: all apps
        self.rejections: list[tuple[int, int, str]] = []  # queued handshake rejections
        self.events = EventPusher(state, self, redelivery_schedule=redelivery_schedule, rng=rng)

    def add_routes(self, app: web.Application) -> None:
        """Registers the gateway routes."""
        app.router.add_post(DISCOVERY_PATH, self._discover)
        app.router.add_get(WS_PATH, self._connect)

    def _down(self, app_id: str) -> bool:
        return self.closing or None in self.refused or app_id in self.refused

    def wire_config(self) -> dict[str, int | float]:
        """ClientConfig as the gateway sends it (whole numbers as integers)."""
        return {
            k: int(v) if float(v).is_integer() else v
            for k, v in self.client_config.to_json().items()
        }

    async def _discover(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response({"code": 10002, "msg": "invalid request body"})
        app = self._state.apps.get(str(body.get("AppID", "")))
        if app is None:
            return web.json_response({"code": 10003, "msg": "invalid app_id"})
        request[APP_KEY] = app.app_id
        if body.get("AppSecret") != app.app_secret:
            return web.json_response({"code": 10014, "msg": "app secret invalid"})
        if self._down(app.app_id):
            return web.json_response({"code": 1, "msg": "system busy"}, status=503)
        ticket = secrets.token_urlsafe(24)
        device_id = str(self._rng.randrange(10**18, 10**19))
        service_id = int(app.app_id.encode().hex()[-6:], 16) % 90000 + 10000
        self.issue(ticket, _Ticket(app.app_id, device_id, service_id, time.monotonic()))
        url = (
            f"ws://{request.host}{WS_PATH}?fpid=493&aid=552564&device_id={device_id}"
            f"&access_key={secrets.token_hex(16)}&service_id={service_id}&ticket={ticket}"
        )
        return web.json_response(
            {"code": 0, "msg": "ok", "data": {"URL": url, "ClientConfig": self.wire_config()}}
        )

    def _reject(self, status: int, autherrcode: int, msg: str) -> web.Response:
        headers = {
            "handshake-status": str(status),
            "handshake-msg": msg,
            "handshake-autherrcode": str(autherrcode),
        }
        return web.Response(status=403, headers=headers, text=msg)

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        ticket = self.redeem(request)
        if ticket is None:
            return self._reject(AUTH_FAILED, BAD_TICKET, "ticket invalid or expired")
        request[APP_KEY] = ticket.app_id
        if self._down(ticket.app_id):
            return web.Response(status=503, text="service unavailable")
        if self.rejections:
            return self._reject(*self.rejections.pop(0))
        if len(self.live(ticket.app_id)) >= self.max_connections:
            return self._reject(AUTH_FAILED, EXCEED_CONN_LIMIT, "exceed connection limit")
        return await self.serve(request, Connection(ticket, request))

    async def received(self, conn: Connection, msg: WSMessage) -> None:
        if msg.type == WSMsgType.BINARY:
            await self._on_frame(conn, msg.data)

    async def _on_frame(self, conn: Connection, data: bytes) -> None:
        try:
            frame = frames.decode(data)
        except frames.FrameError:
            return  # the real gateway's reaction is unknown; ignoring keeps the socket usable
        headers = frames.headers_of(frame)
        if frame.method == frames.FrameMethod.CONTROL and headers.get(frames.TYPE) == frames.PING:
            conn.pings += 1
            if not conn.silenced:
                payload = json.dumps(self.wire_config()).encode()
                pong = frames.control_frame(frames.PONG, conn.service_id, payload)
                if await self.send(conn, frames.encode(pong)):
                    conn.pongs += 1
            self._state.notify()
        elif frame.method == frames.FrameMethod.DATA:
            self._record_ack(conn, frame, headers)

    def _record_ack(self, conn: Connection, frame: frames.Frame, headers: dict[str, str]) -> None:
        now = time.monotonic()
        frame_message_id = headers.get(frames.MESSAGE_ID, "")
        delivery = self.events.deliveries.get(frame_message_id)
        payload: Any = frame.payload.decode("utf-8", "replace")
        with contextlib.suppress(ValueError):
            payload = json.loads(payload)
        code = payload.get("code") if isinstance(payload, dict) else None
        code = code if isinstance(code, int) else None
        biz_rt = headers.get(frames.BIZ_RT)
        matches = delivery is not None and (
            frame.SeqID in delivery.seq_ids
            and frame.LogID == delivery.log_id
            and frame.service == delivery.service
        )
        self._state.acks.append(
            AckRecord(
                frame_message_id=frame_message_id,
                connection_id=conn.id,
                app_id=conn.app_id,
                at=now,
                code=code,
                latency=now - delivery.sent_at if delivery is not None else None,
                biz_rt=int(biz_rt) if biz_rt is not None and biz_rt.isdigit() else None,
                seq_id=frame.SeqID,
                log_id=frame.LogID,
                service=frame.service,
                matches=matches,
                headers=headers,
                payload=payload,
            )
        )
        if delivery is not None and matches:
            self.events.acked(delivery, code)
        self._state.notify()

    async def send(self, conn: Connection, data: bytes) -> bool:
        """Sends one encoded frame; False when the socket is gone."""
        return await conn.send(data)
