"""The emulator's Stream gateway: open-connection tickets, WebSocket, pings, pushes and faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMessage, WSMsgType, web

from channels.dingtalk.emulator.openapi import json_object
from channels.dingtalk.emulator.payloads import disconnect_frame, ping_frame
from channels.dingtalk.emulator.state import AckRecord, ApiError, EmulatorState
from channels.emulator.gateway import GatewayBase, Socket, SocketInfo, cancelled
from channels.emulator.http import APP_KEY

OPEN_PATH = "/v1.0/gateway/connections/open"
CONNECT_PATH = "/connect"


@dataclass(frozen=True, slots=True)
class ConnectionInfo(SocketInfo):
    """A snapshot of one Stream connection."""

    client_id: str
    pings_sent: int
    frames_sent: int
    subscriptions: tuple[tuple[str, str], ...]
    ua: str


@dataclass(frozen=True, slots=True)
class SentFrame:
    """One frame the gateway pushed; `delivered` is False when a silenced socket swallowed it."""

    message_id: str
    client_id: str
    connection_id: str
    at: float  # time.monotonic()
    frame: dict[str, Any]
    delivered: bool

    @property
    def topic(self) -> str:
        """The frame's topic header."""
        return str(self.frame.get("headers", {}).get("topic", ""))


@dataclass(frozen=True, slots=True)
class _Ticket:
    client_id: str
    subscriptions: tuple[tuple[str, str], ...]
    ua: str
    issued_at: float


class _Connection(Socket):
    def __init__(self, ticket: _Ticket, request: web.Request) -> None:
        super().__init__(str(uuid.uuid4()), ticket.client_id, request)
        self.subscriptions = ticket.subscriptions
        self.ua = ticket.ua
        self.disconnecting = False  # told to go (SYSTEM disconnect): no more deliveries
        self.pings_sent = 0
        self.frames_sent = 0
        self.ping_task: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        if self.closed_at is None and self.disconnecting:
            return "disconnecting"
        return super().state

    def info(self) -> ConnectionInfo:
        return ConnectionInfo(
            **self.snapshot(),
            client_id=self.app_id,
            pings_sent=self.pings_sent,
            frames_sent=self.frames_sent,
            subscriptions=self.subscriptions,
            ua=self.ua,
        )


def app_uuid(client_id: str) -> str:
    """The `appId` header is DingTalk's internal app uuid, not the AppKey."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "dingtalk-app:" + client_id))


class Gateway(GatewayBase[_Connection, _Ticket]):
    """Serves `/v1.0/gateway/connections/open` and `/connect`, and drives the sockets."""

    close_code = 1011
    close_message = b"internal error"

    def __init__(
        self,
        state: EmulatorState,
        *,
        ping_interval: float | None,
        disconnect_grace: float,
        ticket_ttl: float,
        rng: random.Random,
    ) -> None:
        super().__init__(state, ticket_ttl=ticket_ttl, rng=rng)
        self._state: EmulatorState = state
        self.ping_interval = ping_interval
        self.disconnect_grace = disconnect_grace
        self.sent: dict[str, SentFrame] = {}
        self.down = False  # an outage: sockets cut, new ones refused, pushes held (see outage())
        self._held: dict[str, list[dict[str, Any]]] = {}
        self.hold_offline = False  # hold pushes for an app with no connection instead of failing

    def add_routes(self, app: web.Application) -> None:
        """Registers the gateway routes."""
        app.router.add_post(OPEN_PATH, self._open)
        app.router.add_get(CONNECT_PATH, self._connect)

    async def _open(self, request: web.Request) -> web.Response:
        if self.closing or self.down:
            raise ApiError(503, "ServiceUnavailable", "gateway is shutting down")
        body = await json_object(request)
        app = self._state.apps.get(str(body.get("clientId", "")))
        if app is None or body.get("clientSecret") != app.client_secret:
            raise ApiError(401, "InvalidAuthentication", "clientId or clientSecret is invalid")
        request[APP_KEY] = app.client_id
        subscriptions = tuple(
            (str(s.get("type", "")), str(s.get("topic", "")))
            for s in body.get("subscriptions") or []
            if isinstance(s, dict)
        )
        ticket = str(uuid.uuid4())
        self.issue(
            ticket,
            _Ticket(app.client_id, subscriptions, str(body.get("ua", "")), time.monotonic()),
        )
        return web.json_response(
            {"endpoint": f"ws://{request.host}{CONNECT_PATH}", "ticket": ticket}
        )

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        ticket = self.redeem(request)
        if ticket is None:
            raise ApiError(401, "InvalidTicket", "ticket is invalid, used or expired")
        if self.closing or self.down:
            raise ApiError(503, "ServiceUnavailable", "gateway is shutting down")
        request[APP_KEY] = ticket.client_id
        return await self.serve(request, _Connection(ticket, request))

    async def opened(self, conn: _Connection) -> None:
        if self.ping_interval:
            conn.ping_task = asyncio.create_task(self._ping_loop(conn, self.ping_interval))
        for frame in self._held.pop(conn.app_id, []):
            await self._send(conn, frame, record=True)

    async def received(self, conn: _Connection, msg: WSMessage) -> None:
        if msg.type == WSMsgType.TEXT:
            self._record_ack(conn, msg.data)

    async def closed(self, conn: _Connection) -> None:
        await cancelled(conn.ping_task)

    def _record_ack(self, conn: _Connection, raw: str) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            frame = {"unparsed": raw}
        if not isinstance(frame, dict):
            frame = {"unparsed": frame}
        headers = frame.get("headers")
        if not isinstance(headers, dict):
            headers = {}
        data = frame.get("data")
        if isinstance(data, str):
            with contextlib.suppress(ValueError):
                data = json.loads(data)
        code = frame.get("code")
        self._state.acks.append(
            AckRecord(
                message_id=str(headers.get("messageId", "")),
                connection_id=conn.id,
                client_id=conn.app_id,
                at=time.monotonic(),
                code=code if isinstance(code, int) else None,
                message=str(frame.get("message", "")),
                data=data,
                frame=frame,
            )
        )
        self._state.notify()

    async def _ping_loop(self, conn: _Connection, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if conn.silenced or conn.disconnecting:
                continue
            frame = ping_frame(app_uuid(conn.app_id), conn.id)
            if not await self._send(conn, frame, record=True):
                return
            conn.pings_sent += 1

    async def _send(self, conn: _Connection, frame: dict[str, Any], *, record: bool) -> bool:
        if not await conn.send(json.dumps(frame, ensure_ascii=False)):
            return False
        conn.frames_sent += 1
        if record:
            headers = frame.get("headers")
            message_id = str(headers.get("messageId", "")) if isinstance(headers, dict) else ""
            self.sent[message_id] = SentFrame(
                message_id, conn.app_id, conn.id, time.monotonic(), frame, True
            )
            self._state.notify()
        return True

    async def push(
        self, client_id: str, frame: dict[str, Any], *, connection_id: str | None = None
    ) -> SentFrame:
        """Sends a frame to one live connection of the app, chosen at random like DingTalk does.

        During an outage (or with `hold_offline`, while the app has no connection) the frame is
        held and sent to the app's next connection.
        """
        headers = frame.get("headers")
        # raw frames may be malformed on purpose (fuzzing the client)
        message_id = str(headers.get("messageId", "")) if isinstance(headers, dict) else ""
        candidates = [c for c in self.targets(client_id, connection_id) if not c.disconnecting]
        if self.down or (self.hold_offline and not candidates):
            self._held.setdefault(client_id, []).append(frame)
            return SentFrame(message_id, client_id, "", time.monotonic(), frame, False)
        if not candidates:
            raise LookupError(f"no live Stream connection for app {client_id!r}")
        awake = [c for c in candidates if not c.silenced]
        # Random choice models DingTalk's load balancing; not a security decision.
        conn = self._rng.choice(awake or candidates)
        if conn.silenced:
            sent = SentFrame(message_id, client_id, conn.id, time.monotonic(), frame, False)
            self.sent[message_id] = sent
            self._state.notify()
            return sent
        if not await self._send(conn, frame, record=True):
            raise LookupError(f"connection {conn.id} of app {client_id!r} closed while sending")
        return self.sent[message_id]

    async def push_raw(self, client_id: str, data: str | bytes) -> str:
        """Sends any text or bytes as one frame (fuzzing the client); returns the socket id."""
        live = [c for c in self.live(client_id) if not c.disconnecting]
        if not live:
            raise LookupError(f"no live Stream connection for app {client_id!r}")
        conn = self._rng.choice(live)
        if not await conn.send(data):
            raise LookupError(f"connection {conn.id} of app {client_id!r} closed while sending")
        conn.frames_sent += 1
        return conn.id

    async def redeliver(self, message_id: str) -> SentFrame:
        """Resends an earlier frame, byte for byte, to a live connection of the same app."""
        previous = self.sent.get(message_id)
        if previous is None:
            raise KeyError(f"no frame with messageId {message_id!r} was sent")
        return await self.push(previous.client_id, previous.frame)

    async def system_disconnect(
        self,
        client_id: str,
        reason: str,
        *,
        grace: float | None = None,
        connection_id: str | None = None,
    ) -> int:
        """Sends SYSTEM disconnect, stops delivering there, closes TCP after the grace period."""
        targets = [c for c in self.targets(client_id, connection_id) if not c.disconnecting]
        for conn in targets:
            await self._send(conn, disconnect_frame(reason), record=True)
            conn.disconnecting = True
            self.spawn(self._close_later(conn, self.disconnect_grace if grace is None else grace))
        self._state.notify()
        return len(targets)

    async def _close_later(self, conn: _Connection, grace: float) -> None:
        await asyncio.sleep(grace)
        if conn.closed_at is None and conn.transport is not None:
            conn.transport.close()

    async def outage(self, on: bool) -> int:
        """The gateway dies (every socket reset, opens and upgrades answered 503) or comes back."""
        self.down = on
        targets = self.live(None) if on else []
        for conn in targets:
            conn.abort()
        self._state.notify()
        return len(targets)
