"""The websocket side every platform connection shares.

A platform's `connection.py` speaks its protocol; this holds what does not depend on it: a
bounded connect whose failures are classified, reads under a silence watchdog, and the count of
frames dropped as unreadable that the provider reports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from channels.observer import TOO_DEEP, UNREADABLE
from common.errors import TransientError

OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
PING_SECONDS = 20.0  # websockets' own keepalive, beneath whatever pings the platform adds
MAX_FRAME_BYTES = 4 * 1024 * 1024

# What a refused upgrade means is the platform's call (a spent ticket, bad credentials...).
Rejection = Callable[[InvalidStatus], Exception]
# The wait hint an ended session carries, asked for when it ends (it may be random).
RetryHint = Callable[[], float | None]


def _no_hint() -> float | None:
    return None


class SessionSocket:
    """One session's websocket, with the time of its last frame; dropped frames go to `on_drop`."""

    def __init__(
        self,
        peer: str,
        logger: logging.Logger,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.peer = peer  # names the far end in errors and logs: "gateway", "feishu gateway"
        self.ws: ClientConnection | None = None
        self.last_frame_at = time.monotonic()
        self._log = logger
        self._on_drop = on_drop

    async def connect(
        self,
        url: str,
        *,
        rejected: Rejection,
        retry_hint: RetryHint = _no_hint,
        env_proxy: bool = True,
    ) -> ClientConnection:
        """Open the socket; a refused upgrade raises `rejected(exc)`, anything else transient."""
        try:
            ws = await connect(
                url,
                open_timeout=OPEN_TIMEOUT,
                close_timeout=CLOSE_TIMEOUT,
                ping_interval=PING_SECONDS,
                ping_timeout=PING_SECONDS,
                max_size=MAX_FRAME_BYTES,
                # True is websockets' default (the environment's proxy settings)
                proxy=True if env_proxy else None,
            )
        except InvalidStatus as exc:
            raise rejected(exc) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise TransientError(
                f"{self.peer} websocket connect failed: {type(exc).__name__}", retry_hint()
            ) from exc
        self.ws = ws
        self.last_frame_at = time.monotonic()
        return ws

    async def receive(self, silence: float, retry_hint: RetryHint = _no_hint) -> str | bytes:
        """The next message; TransientError once the socket closed or sent nothing for `silence`."""
        ws = self.ws
        if ws is None:
            raise TransientError("session is not open")
        try:
            async with asyncio.timeout(silence):
                raw = await ws.recv()
        except TimeoutError:
            raise TransientError(
                f"no frame from the {self.peer} for {silence:.0f}s (pings included)",
                retry_hint(),
            ) from None
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            raise TransientError(
                f"{self.peer} closed the socket (code {code})", retry_hint()
            ) from exc
        self.last_frame_at = time.monotonic()
        return raw

    def json_object(self, raw: str | bytes, what: str) -> dict[str, Any] | None:
        """`raw` decoded as a JSON object; None once it was dropped as unreadable."""
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        except RecursionError:
            # the C decoder gives up past the interpreter's recursion limit; uncaught, it would
            # end the reader task and with it the session
            self.drop(f"{what} nested deeper than the JSON decoder goes", TOO_DEEP)
            return None
        if not isinstance(value, dict):
            self.drop(f"{what} is not a JSON object")
            return None
        return value

    def drop(self, why: str, reason: str = UNREADABLE) -> None:
        """Count and log a frame skipped as unreadable; `reason` labels the metric."""
        if self._on_drop is not None:
            self._on_drop(reason)
        self._log.warning("dropped a %s frame: %s", self.peer, why)

    async def close(self) -> None:
        """Close the socket, bounded by the websocket close timeout."""
        ws, self.ws = self.ws, None
        if ws is not None:
            await ws.close()
