"""What every emulator's `/_emulator/` control plane shares: the prefix, JSON bodies and errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

CONTROL_PREFIX = "/_emulator/"
MAX_WAIT = 60.0  # long-poll ceiling, well under common client timeouts

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guard(handler: Handler) -> Handler:
    """Maps the emulator's own exceptions to JSON errors instead of 500 pages."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except KeyError as exc:
            return web.json_response({"error": f"not found: {exc}"}, status=404)
        except LookupError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    return wrapped


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (an empty one without a body)."""
    if not request.can_read_body:
        return {}
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body
