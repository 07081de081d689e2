"""A loopback websocket server a test drives: it refuses upgrades on demand and hands each
accepted connection to the test, which sends, stays silent or closes with a code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response


class Gateway:
    """A loopback websocket server: refuses upgrades on demand, hands each connection over."""

    def __init__(self) -> None:
        self.refuse_with: int | None = None
        self.accepted: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self._server: Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await serve(self._hold, "127.0.0.1", 0, process_request=self._check)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/session"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _check(self, connection: ServerConnection, _request: Request) -> Response | None:
        if self.refuse_with is None:
            return None
        return connection.respond(self.refuse_with, "refused\n")

    async def _hold(self, connection: ServerConnection) -> None:
        await self.accepted.put(connection)
        await connection.wait_closed()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    server = Gateway()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
