"""The admin listener: health and readiness now; the REST API and page grow here."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from daemon.config import AdminSection

Readiness = Callable[[], Awaitable[bool]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(admin: AdminSection) -> None:
    """Refuse to serve beyond loopback without a token."""
    if not is_loopback(admin.host) and admin.token is None:
        raise ValueError(f"admin.listen {admin.listen} is not loopback: admin.token is required")


def token_matches(expected: str, header: str | None) -> bool:
    """Constant-time comparison of a Bearer token."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(expected.encode(), header[len("Bearer ") :].encode())


class AdminServer:
    """aiohttp application on the admin listener."""

    def __init__(self, admin: AdminSection, ready: Readiness) -> None:
        check_exposure(admin)
        self._admin = admin
        self._ready = ready
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        if await self._ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._admin.host, self._admin.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._admin.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
