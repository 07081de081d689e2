"""The admin listener: REST API, web page, metrics, health and readiness."""

from __future__ import annotations

import hmac
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from common.endpoint import is_loopback
from daemon import admin_token
from daemon.admin_guard import HostPolicy, make_guard_middleware, security_headers
from daemon.api import PREFIX, AdminApi, Handler, error_response, make_error_middleware
from daemon.channel_service import ApiError
from daemon.config import AdminSection

log = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[bool]]
WEB_ROOT = Path(__file__).resolve().parent / "web"
PUBLIC_API_PATHS = frozenset({f"{PREFIX}/openapi.json"})


def check_exposure(admin: AdminSection) -> None:
    """Refuse to serve beyond loopback without a token (the config validates this too)."""
    if not is_loopback(admin.host) and admin.token is None:
        raise ValueError(f"admin.listen {admin.listen} is not loopback: admin.token is required")


def token_matches(expected: str, header: str | None) -> bool:
    """Constant-time comparison of a Bearer token; the scheme's case does not matter (RFC 9110)."""
    if not header:
        return False
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # aiohttp hands undecodable header bytes over as surrogates: compare the bytes as they came
    sent = credentials.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(expected.encode(), sent)


def make_auth_middleware(token: str) -> Middleware:
    """Bearer token on /api/v1 (but the OpenAPI document); the page, metrics and probes are open."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        guarded = request.path.startswith(PREFIX) and request.path not in PUBLIC_API_PATHS
        if guarded and not token_matches(token, request.headers.get("Authorization")):
            response = error_response(
                ApiError(401, "unauthorized", "missing or wrong bearer token")
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="channeld"'
            return response
        return await handler(request)

    return auth


class AdminServer:
    """aiohttp application on the admin listener."""

    def __init__(
        self,
        admin: AdminSection,
        ready: Readiness,
        *,
        state_dir: Path,
        api: AdminApi | None = None,
        metrics: Handler | None = None,
    ) -> None:
        check_exposure(admin)
        self._admin = admin
        self._ready = ready
        # the token file, when the token is the generated one (None: `[admin] token` is set)
        self.token_file: Path | None = None
        if admin.token is not None:
            self.token = admin.token.get_secret_value()
        else:
            self.token, created = admin_token.load_or_create(state_dir)
            self.token_file = admin_token.token_path(state_dir)
            if created:
                log.info("generated the admin token in %s (mode 0600)", self.token_file)
        hosts = HostPolicy(admin.host, admin.allowed_hosts)
        # outermost first: errors wrap the guard and auth too, so nothing they raise is a bare 500
        self.app = web.Application(
            middlewares=[
                make_error_middleware(),
                make_guard_middleware(hosts),
                make_auth_middleware(self.token),
            ]
        )
        self.app.on_response_prepare.append(security_headers)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        if metrics is not None:
            self.app.router.add_get("/metrics", metrics)
        if api is not None:
            api.add_routes(self.app)
        if (WEB_ROOT / "index.html").exists():
            self.app.router.add_get("/", self._index)
            self.app.router.add_static("/static/", WEB_ROOT, show_index=False)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _index(self, _: web.Request) -> web.FileResponse:
        # the Content-Security-Policy is added to every response (daemon/admin_guard.py)
        headers = {"Cache-Control": "no-store"}
        return web.FileResponse(WEB_ROOT / "index.html", headers=headers)

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
        self.port = self._runner.addresses[0][1]
        if self.token_file is not None:
            log.info("admin API token: %s (for `channeld channels --token-file`)", self.token_file)
            if sys.stderr.isatty():
                # an operator at a terminal: one click opens the page; a log would keep the token
                url = admin_token.login_url(self._admin.host, self.port, self.token)
                print(f"channeld admin page: {url}", file=sys.stderr, flush=True)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
