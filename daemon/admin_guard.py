"""What keeps web pages from driving the admin listener: Host, Origin, Content-Type, headers.

Any page the operator visits can send requests to 127.0.0.1 (CSRF), and a page whose DNS name is
rebound to 127.0.0.1 can read the answers (DNS rebinding). The bearer token stops both; these
checks stop them as well, token or not, and cost a legitimate client nothing:

- Host must name this listener: a loopback name or address, the listen address, the address the
  connection arrived on, or an `[admin] allowed_hosts` entry. A rebinding page always sends its
  own DNS name. `/healthz` and `/readyz` are exempt: orchestrators probe them by whatever address
  they know (a pod IP, a NAT-ed port), and they say no more than "ok".
- A state-changing request (anything but GET, HEAD, OPTIONS) must not come from another origin:
  `Origin`, when sent, must be this host[:port]; `Sec-Fetch-Site: cross-site` is refused.
- Its Content-Type, when sent, must be `application/json` (UTF-8), and a body must have one: a
  cross-site form or a "simple" fetch (text/plain) can never reach a handler.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from daemon.api import Handler, error_response
from daemon.channel_service import ApiError
from daemon.hosts import normalise_ip, parse_host

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBES = frozenset({"/healthz", "/readyz"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (names of the wildcard, not a bind)
# the page has no inline script or style: nothing but our own files may run, nobody may frame it
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
OTHER_CSP = "default-src 'none'; frame-ancestors 'none'"


class HostPolicy:
    """Which `Host` header values the admin listener answers."""

    def __init__(self, listen_host: str, allowed_hosts: Iterable[str]) -> None:
        self._listen = None if listen_host in WILDCARDS else parse_host(listen_host)
        if self._listen is None and ":" in listen_host:
            self._listen = parse_host(f"[{listen_host}]")
        self._allowed = [h for h in (parse_host(entry) for entry in allowed_hosts) if h]

    def allows(self, value: str | None, local_ip: str | None) -> bool:
        """True when `value` names this listener (see the module docstring)."""
        if value is None:
            return True  # HTTP/1.0 without Host: not a browser, so nothing to defend against
        host = parse_host(value)
        if host is None:
            return False
        if host.is_loopback or host.host == local_ip:
            return True
        if self._listen is not None and host.host == self._listen.host:
            return True
        return any(
            host.host == allowed.host and allowed.port in (None, host.port)
            for allowed in self._allowed
        )


def same_origin(origin: str, host: str | None) -> bool:
    """`Origin` names the host[:port] the request was sent to.

    The scheme is not compared: behind a TLS proxy the page is https while this listener is http.
    """
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or host is None:
        return False
    ours, theirs = parse_host(host), parse_host(rest)
    return ours is not None and theirs == ours


def is_json_utf8(content_type: str) -> bool:
    """`application/json` with no charset or UTF-8; any other media type or charset is not."""
    media, *params = content_type.split(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


def _local_ip(request: web.Request) -> str | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and sockname and isinstance(sockname[0], str):
        return normalise_ip(sockname[0])
    return None


def refusal(request: web.Request, hosts: HostPolicy) -> ApiError | None:
    """Why this request must not reach a handler, or None."""
    host = request.headers.get("Host")
    if request.path not in PROBES and not hosts.allows(host, _local_ip(request)):
        return ApiError(
            403,
            "host_not_allowed",
            "this Host is not served here: the admin listener answers loopback names, its own "
            "address and [admin] allowed_hosts",
        )
    if request.method in SAFE_METHODS:
        return None
    if request.headers.get("Sec-Fetch-Site", "").strip().lower() == "cross-site":
        return ApiError(403, "cross_origin", "cross-site requests may not change anything")
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin, host):
        return ApiError(403, "cross_origin", "requests from another origin may not change anything")
    content_type = request.headers.get("Content-Type")
    if content_type is None and request.body_exists:
        return ApiError(415, "unsupported_media_type", "a request body must be application/json")
    if content_type is not None and not is_json_utf8(content_type):
        return ApiError(
            415,
            "unsupported_media_type",
            "Content-Type must be application/json (UTF-8; charset omitted or utf-8)",
        )
    return None


def make_guard_middleware(hosts: HostPolicy) -> Middleware:
    """Refuses, as a JSON error, what `refusal` names; on every path, the page included."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        error = refusal(request, hosts)
        if error is not None:
            return error_response(error)
        return await handler(request)

    return guard


async def security_headers(_: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every answer, page or API or error, carries the same defences."""
    page = response.content_type == "text/html"  # the policy governs documents only
    response.headers["Content-Security-Policy"] = PAGE_CSP if page else OTHER_CSP
    response.headers["X-Frame-Options"] = "DENY"  # for browsers that ignore frame-ancestors
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
