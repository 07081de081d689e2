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

from aiohttp import WSMsgType, web

from channels.dingtalk.emulator.payloads import disconnect_frame, ping_frame
from channels.dingtalk.emulator.state import CLIENT_ID_KEY, AckRecord, ApiError, EmulatorState

OPEN_PATH = "/v1.0/gateway/connections/open"
CONNECT_PATH = "/connect"
CLOSE_TIMEOUT = 2.0  # how long a server-side close waits for the client's close frame


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """A snapshot of one Stream connection."""

    connection_id: str
    client_id: str
    state: str  # "open", "silenced", "disconnecting", "closed"
    opened_at: float  # time.monotonic()
    closed_at: float | None
    close_code: int | None
    pings_sent: int
    frames_sent: int
    subscriptions: tuple[tuple[str, str], ...]
    ua: str

    @property
    def live(self) -> bool:
        """The socket is still open (whatever the server thinks of it)."""
        return self.state != "closed"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form for the control plane."""
        return {
            "connection_id": self.connection_id,
            "client_id": self.client_id,
            "state": self.state,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "close_code": self.close_code,
            "pings_sent": self.pings_sent,
            "frames_sent": self.frames_sent,
            "subscriptions": [list(s) for s in self.subscriptions],
            "ua": self.ua,
        }


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


class _Connection:
    def __init__(
        self, client_id: str, ws: web.WebSocketResponse, transport: Any, ticket: _Ticket
    ) -> None:
        self.id = str(uuid.uuid4())
        self.client_id = client_id
        self.ws = ws
        self.transport = transport
        self.subscriptions = ticket.subscriptions
        self.ua = ticket.ua
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self.silenced = False
        self.disconnecting = False
        self.pings_sent = 0
        self.frames_sent = 0
        self.lock = asyncio.Lock()
        self.ping_task: asyncio.Task[None] | None = None

    def info(self) -> ConnectionInfo:
        if self.closed_at is not None:
            state = "closed"
        elif self.disconnecting:
            state = "disconnecting"
        elif self.silenced:
            state = "silenced"
        else:
            state = "open"
        return ConnectionInfo(
            self.id,
            self.client_id,
            state,
            self.opened_at,
            self.closed_at,
            self.ws.close_code,
            self.pings_sent,
            self.frames_sent,
            self.subscriptions,
            self.ua,
        )


def app_uuid(client_id: str) -> str:
    """The `appId` header is DingTalk's internal app uuid, not the AppKey."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "dingtalk-app:" + client_id))


class Gateway:
    """Serves `/v1.0/gateway/connections/open` and `/connect`, and drives the sockets."""

    def __init__(
        self,
        state: EmulatorState,
        *,
        ping_interval: float | None,
        disconnect_grace: float,
        ticket_ttl: float,
        rng: random.Random,
    ) -> None:
        self._state = state
        self.ping_interval = ping_interval
        self.disconnect_grace = disconnect_grace
        self._ticket_ttl = ticket_ttl
        self._rng = rng
        self._tickets: dict[str, _Ticket] = {}
        self._connections: dict[str, _Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent: dict[str, SentFrame] = {}
        self.closing = False
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
        try:
            body = await request.json()
        except ValueError as exc:
            raise ApiError(400, "InvalidParameter", "body must be JSON") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "InvalidParameter", "body must be a JSON object")
        app = self._state.apps.get(str(body.get("clientId", "")))
        if app is None or body.get("clientSecret") != app.client_secret:
            raise ApiError(401, "InvalidAuthentication", "clientId or clientSecret is invalid")
        request[CLIENT_ID_KEY] = app.client_id
        subscriptions = tuple(
            (str(s.get("type", "")), str(s.get("topic", "")))
            for s in body.get("subscriptions") or []
            if isinstance(s, dict)
        )
        ticket = str(uuid.uuid4())
        self._tickets[ticket] = _Ticket(
            app.client_id, subscriptions, str(body.get("ua", "")), time.monotonic()
        )
        return web.json_response(
            {"endpoint": f"ws://{request.host}{CONNECT_PATH}", "ticket": ticket}
        )

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        ticket = self._tickets.pop(request.query.get("ticket", ""), None)
        if ticket is None or time.monotonic() - ticket.issued_at > self._ticket_ttl:
            raise ApiError(401, "InvalidTicket", "ticket is invalid, used or expired")
        if self.closing or self.down:
            raise ApiError(503, "ServiceUnavailable", "gateway is shutting down")
        request[CLIENT_ID_KEY] = ticket.client_id
        # autoping answers the client library's own keepalive pings, as the real gateway does.
        ws = web.WebSocketResponse(timeout=CLOSE_TIMEOUT, autoping=True)
        await ws.prepare(request)
        conn = _Connection(ticket.client_id, ws, request.transport, ticket)
        self._connections[conn.id] = conn
        if self.ping_interval:
            conn.ping_task = asyncio.create_task(self._ping_loop(conn, self.ping_interval))
        self._state.notify()
        for frame in self._held.pop(conn.client_id, []):
            await self._send(conn, frame, record=True)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._record_ack(conn, msg.data)
        finally:
            conn.closed_at = time.monotonic()
            if conn.ping_task is not None:
                conn.ping_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await conn.ping_task
            self._state.notify()
        return ws

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
                client_id=conn.client_id,
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
            frame = ping_frame(app_uuid(conn.client_id), conn.id)
            if not await self._send(conn, frame, record=True):
                return
            conn.pings_sent += 1

    async def _send(self, conn: _Connection, frame: dict[str, Any], *, record: bool) -> bool:
        try:
            async with conn.lock:
                await conn.ws.send_str(json.dumps(frame, ensure_ascii=False))
        except (ConnectionError, RuntimeError):
            return False  # the socket went away under us; its handler records the close
        conn.frames_sent += 1
        if record:
            headers = frame.get("headers")
            message_id = str(headers.get("messageId", "")) if isinstance(headers, dict) else ""
            self.sent[message_id] = SentFrame(
                message_id, conn.client_id, conn.id, time.monotonic(), frame, True
            )
            self._state.notify()
        return True

    def _live(self, client_id: str | None) -> list[_Connection]:
        return [
            c
            for c in self._connections.values()
            if c.closed_at is None and (client_id is None or c.client_id == client_id)
        ]

    def connections(self, client_id: str | None = None) -> list[ConnectionInfo]:
        """Every connection ever opened (closed ones included), oldest first."""
        return [
            c.info()
            for c in self._connections.values()
            if client_id is None or c.client_id == client_id
        ]

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
        candidates = [
            c
            for c in self._live(client_id)
            if not c.disconnecting and (connection_id is None or c.id == connection_id)
        ]
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
        live = [c for c in self._live(client_id) if not c.disconnecting]
        if not live:
            raise LookupError(f"no live Stream connection for app {client_id!r}")
        conn = self._rng.choice(live)
        async with conn.lock:
            if isinstance(data, bytes):
                await conn.ws.send_bytes(data)
            else:
                await conn.ws.send_str(data)
        conn.frames_sent += 1
        return conn.id

    async def redeliver(self, message_id: str) -> SentFrame:
        """Resends an earlier frame, byte for byte, to a live connection of the same app."""
        previous = self.sent.get(message_id)
        if previous is None:
            raise KeyError(f"no frame with messageId {message_id!r} was sent")
        return await self.push(previous.client_id, previous.frame)

    def _targets(self, client_id: str, connection_id: str | None) -> list[_Connection]:
        return [c for c in self._live(client_id) if connection_id in (None, c.id)]

    async def drop(
        self, client_id: str, *, mode: str = "abort", connection_id: str | None = None
    ) -> int:
        """Kills live sockets: `abort` resets TCP with no close frame, `close` sends close 1011."""
        if mode not in ("abort", "close"):
            raise ValueError("mode must be 'abort' or 'close'")
        targets = self._targets(client_id, connection_id)
        for conn in targets:
            if mode == "abort" and conn.transport is not None:
                conn.transport.abort()
            elif mode == "close":
                await conn.ws.close(code=1011, message=b"internal error")
        return len(targets)

    async def system_disconnect(
        self,
        client_id: str,
        reason: str,
        *,
        grace: float | None = None,
        connection_id: str | None = None,
    ) -> int:
        """Sends SYSTEM disconnect, stops delivering there, closes TCP after the grace period."""
        targets = [c for c in self._targets(client_id, connection_id) if not c.disconnecting]
        for conn in targets:
            await self._send(conn, disconnect_frame(reason), record=True)
            conn.disconnecting = True
            task = asyncio.create_task(
                self._close_later(conn, self.disconnect_grace if grace is None else grace)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._state.notify()
        return len(targets)

    async def _close_later(self, conn: _Connection, grace: float) -> None:
        await asyncio.sleep(grace)
        if conn.closed_at is None and conn.transport is not None:
            conn.transport.close()

    async def outage(self, on: bool) -> int:
        """The gateway dies (every socket reset, opens and upgrades answered 503) or comes back."""
        self.down = on
        targets = self._live(None) if on else []
        for conn in targets:
            if conn.transport is not None:
                conn.transport.abort()
        self._state.notify()
        return len(targets)

    def silence(self, client_id: str, on: bool = True, *, connection_id: str | None = None) -> int:
        """Zombie sockets: they stay open but get no pings and no deliveries."""
        targets = self._targets(client_id, connection_id)
        for conn in targets:
            conn.silenced = on
        self._state.notify()
        return len(targets)

    async def close_all(self) -> None:
        """Closes every socket (1001 going away) and cancels the gateway's own tasks."""
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        live = self._live(None)
        # Errors are ignored: a socket that is already broken needs no close handshake.
        await asyncio.gather(
            *(c.ws.close(code=1001, message=b"going away") for c in live), return_exceptions=True
        )
        for conn in live:
            if conn.closed_at is None and conn.transport is not None:
                conn.transport.abort()
