"""What every emulated gateway shares: one-use tickets, socket bookkeeping, socket faults, closing.

A platform's gateway subclasses `GatewayBase` with its own wire format: what a ticket carries,
what a client frame means, what a connection reports about itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import WSMessage, web

from channels.emulator.state import EmulatorStateBase, json_fields

CLOSE_TIMEOUT = 2.0  # how long a server-side close waits for the client's close frame


@dataclass(frozen=True, slots=True)
class SocketInfo:
    """A snapshot of one connection: what every platform reports about it."""

    connection_id: str
    state: str  # "open", "silenced", "disconnecting", "closed"
    opened_at: float  # time.monotonic()
    closed_at: float | None
    close_code: int | None

    @property
    def live(self) -> bool:
        """The socket is still open (whatever the server thinks of it)."""
        return self.state != "closed"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form for the control plane."""
        return json_fields(self)


class Socket:
    """One server-side WebSocket of an app, and when it opened and closed."""

    def __init__(self, connection_id: str, app_id: str, request: web.Request) -> None:
        self.id = connection_id
        self.app_id = app_id
        # autoping answers the client library's own RFC 6455 keepalive, as real gateways do.
        self.ws = web.WebSocketResponse(timeout=CLOSE_TIMEOUT, autoping=True)
        self.transport = request.transport
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self.silenced = False  # a zombie: open, but the server neither answers nor delivers
        self.lock = asyncio.Lock()

    @property
    def state(self) -> str:
        """`open`, `silenced` or `closed`."""
        if self.closed_at is not None:
            return "closed"
        return "silenced" if self.silenced else "open"

    def info(self) -> SocketInfo:
        """A snapshot for observers; a platform's socket reports more."""
        return SocketInfo(**self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        """The fields every `SocketInfo` carries, as keyword arguments."""
        return {
            "connection_id": self.id,
            "state": self.state,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "close_code": self.ws.close_code,
        }

    async def send(self, data: str | bytes) -> bool:
        """Sends one frame; False when the socket went away under us (its handler records it)."""
        try:
            async with self.lock:
                if isinstance(data, bytes):
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(data)
        except (ConnectionError, RuntimeError):
            return False
        return True

    def abort(self) -> None:
        """Resets TCP without a close frame."""
        if self.transport is not None:
            self.transport.abort()


class Ticket(Protocol):
    """What the gateway hands out before a socket may connect."""

    @property
    def issued_at(self) -> float:
        """time.monotonic() at issue."""
        ...


S = TypeVar("S", bound=Socket)
TicketT = TypeVar("TicketT", bound=Ticket)


class GatewayBase(Generic[S, TicketT]):
    """Tickets, the sockets of every app, socket faults and an orderly close."""

    close_code = 1000  # what `drop(mode="close")` sends unless told otherwise
    close_message = b""

    def __init__(
        self,
        state: EmulatorStateBase[Any, Any, Any],
        *,
        ticket_ttl: float,
        rng: random.Random,
    ) -> None:
        self._state = state
        self._ticket_ttl = ticket_ttl
        self._rng = rng
        self._tickets: dict[str, TicketT] = {}
        self._sockets: dict[str, S] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = False

    # -- tickets and sockets ---------------------------------------------------------------------

    def issue(self, key: str, ticket: TicketT) -> None:
        """Remembers a ticket until it is used once."""
        self._tickets[key] = ticket

    def redeem(self, request: web.Request) -> TicketT | None:
        """The request's ticket, used up; None when unknown, used or expired."""
        ticket = self._tickets.pop(request.query.get("ticket", ""), None)
        if ticket is None or time.monotonic() - ticket.issued_at > self._ticket_ttl:
            return None
        return ticket

    async def serve(self, request: web.Request, conn: S) -> web.WebSocketResponse:
        """Upgrades the request for `conn` and serves it until the socket closes."""
        await conn.ws.prepare(request)
        self._sockets[conn.id] = conn
        self._state.changed()
        try:
            await self.opened(conn)
            async for msg in conn.ws:
                await self.received(conn, msg)
        finally:
            conn.closed_at = time.monotonic()
            await self.closed(conn)
            self._state.changed()
        return conn.ws

    async def opened(self, conn: S) -> None:
        """The socket is up and registered."""

    async def received(self, conn: S, msg: WSMessage) -> None:
        """One client frame arrived."""

    async def closed(self, conn: S) -> None:
        """The socket is gone."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task the gateway owns: `close_all` cancels it."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def live(self, app_id: str | None) -> list[S]:
        """Open sockets of the app (None: of every app), oldest first."""
        return [
            c
            for c in self._sockets.values()
            if c.closed_at is None and (app_id is None or c.app_id == app_id)
        ]

    def sockets(self, app_id: str | None) -> list[S]:
        """Every socket ever opened (closed ones included), oldest first."""
        return [c for c in self._sockets.values() if app_id is None or c.app_id == app_id]

    # -- faults ----------------------------------------------------------------------------------

    def targets(self, app_id: str | None, connection_id: str | None) -> list[S]:
        """The live sockets a fault applies to."""
        return [c for c in self.live(app_id) if connection_id in (None, c.id)]

    async def drop(
        self,
        app_id: str | None,
        *,
        mode: str = "abort",
        code: int | None = None,
        connection_id: str | None = None,
    ) -> int:
        """Kills live sockets: `abort` resets TCP with no close frame, `close` sends `code`."""
        if mode not in ("abort", "close"):
            raise ValueError("mode must be 'abort' or 'close'")
        targets = self.targets(app_id, connection_id)
        for conn in targets:
            if mode == "abort":
                conn.abort()
            else:
                message = self.close_message if code is None else b""
                await conn.ws.close(code=self.close_code if code is None else code, message=message)
        return len(targets)

    def silence(
        self, app_id: str | None, on: bool = True, *, connection_id: str | None = None
    ) -> int:
        """Zombie sockets: they stay open but the server neither answers nor delivers there."""
        targets = self.targets(app_id, connection_id)
        for conn in targets:
            conn.silenced = on
        self._state.changed()
        return len(targets)

    async def close_all(self) -> None:
        """Closes every socket (1001 going away) and cancels the gateway's own tasks."""
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        live = self.live(None)
        # Errors are ignored: a socket that is already broken needs no close handshake.
        await asyncio.gather(
            *(c.ws.close(code=1001, message=b"going away") for c in live), return_exceptions=True
        )
        for conn in live:
            if conn.closed_at is None:
                conn.abort()


async def cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancels a task and waits until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def no_gateway(state: EmulatorStateBase[Any, Any, Any]) -> GatewayBase[Any, Any]:
    """The gateway of a platform whose bots hold no socket: the socket faults find none."""
    return GatewayBase(state, ticket_ttl=0.0, rng=random.Random())  # noqa: S311 - no tickets
