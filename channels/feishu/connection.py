"""One Feishu/Lark event long connection, native asyncio (docs/platforms/feishu.md §1, §2.3).

lark-oapi 1.7.5's ws client cannot run inside a daemon's loop (a module-global loop, a blocking
discovery call without timeout, no stop, acks only after a synchronous handler). This client
speaks the same protocol: discovery, a websocket carrying pbbp2 frames, app-level pings whose
pongs may carry a new `ClientConfig`, multi-part events, and an ack sent as soon as the event is
journaled. `open()` returns once the socket is up or raises a classified error; `run()` reads
until the session ends and always raises why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from channels.connection import SessionSocket
from channels.feishu import frames
from channels.feishu.api import FeishuApi
from channels.feishu.frames import ClientConfig, Frame, FrameError, FrameMethod
from channels.observer import TOO_DEEP, UNREADABLE
from common.errors import MAX_RETRY_AFTER, AuthError, ConfigError, TransientError

# Receives one decoded event; returning means it is journaled (or a known duplicate).
EventCallback = Callable[[dict[str, Any]], Awaitable[None]]

MAX_PARTS = 64  # an event split further than this is not one we could hold in memory anyway
PONG_GRACE = 30.0  # silence beyond the ping interval that declares the socket dead

# handshake rejection headers, values lark-oapi treats as final (docs/platforms/feishu.md §1.2)
AUTH_FAILED = "514"
FORBIDDEN = "403"
EXCEED_CONN_LIMIT = "1000040350"

ACK_OK = 200
ACK_FAILED = 500  # the platform redelivers later (15 s, 5 min, 1 h, 6 h)


class LongConnection:
    """A single long-connection session: `open()` connects, `run()` reads until it ends."""

    def __init__(
        self,
        api: FeishuApi,
        *,
        on_event: EventCallback,
        logger: logging.Logger,
        config: ClientConfig | None = None,
        watchdog_seconds: float = 0.0,
        on_ack: Callable[[float], None] | None = None,
        on_invalid: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._api = api
        self._on_event = on_event
        self._log = logger
        # before the gateway ever sent its config, SDK defaults pace pings but not retries
        self._config_known = config is not None
        self.client_config = config or ClientConfig()
        self._watchdog = watchdog_seconds
        self._on_ack = on_ack
        self._rng = rng or random.Random()  # noqa: S311  (reconnect jitter)
        self.socket = SessionSocket("feishu gateway", logger, on_invalid)
        self._service = 0
        self._send_lock = asyncio.Lock()
        self._parts = frames.Reassembler()

    @property
    def silence_limit(self) -> float:
        """Seconds without any frame (pongs included) after which the socket counts as dead."""
        return self._watchdog or self.ping_interval + PONG_GRACE

    @property
    def ping_interval(self) -> float:
        """The gateway's PingInterval, capped like every other wait it hands out."""
        return min(self.client_config.ping_interval, MAX_RETRY_AFTER)

    def _retry_hint(self) -> float | None:
        return self.client_config.reconnect_interval if self._config_known else None

    def reconnect_delay(self) -> float:
        """The gateway's jitter before reconnecting after a session ended (lark: random*nonce)."""
        return self._rng.random() * self.client_config.reconnect_nonce

    # -- connect -----------------------------------------------------------------------------------

    async def open(self) -> None:
        """Discovery and websocket handshake; raises classified errors."""
        try:
            url, config = await self._api.discover()
        except TransientError as exc:
            # the gateway's own spacing between failed attempts (ReconnectInterval)
            raise TransientError(str(exc), self._retry_hint()) from exc
        self.client_config = self.client_config.updated(config)
        self._config_known = True
        query = parse_qs(urlsplit(url).query)
        try:
            self._service = int(query["service_id"][0])
        except (KeyError, IndexError, ValueError):
            raise TransientError("feishu gateway URL without a numeric service_id") from None
        # lark-oapi 1.7.5 connects without a proxy whatever the environment says
        await self.socket.connect(
            url, rejected=self._rejection, retry_hint=self._retry_hint, env_proxy=False
        )

    def _rejection(self, exc: InvalidStatus) -> Exception:
        headers = exc.response.headers
        status = headers.get("handshake-status", "")
        auth_code = headers.get("handshake-autherrcode", "")
        detail = f"feishu gateway refused the websocket (HTTP {exc.response.status_code}"
        detail += f", handshake-status {status}" if status else ""
        detail += f", code {auth_code})" if auth_code else ")"
        if status == AUTH_FAILED and auth_code == EXCEED_CONN_LIMIT:
            return ConfigError(detail + ": more than 50 connections for this app")
        if status == FORBIDDEN:
            return AuthError(detail)
        return TransientError(detail, self._retry_hint())

    # -- session -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Ping and read until the session ends; always raises TransientError saying why."""
        ws = self.socket.ws
        if ws is None:
            raise TransientError("session is not open")
        pinger = asyncio.create_task(self._ping_loop(ws), name="feishu-ping")
        try:
            while True:
                raw = await self.socket.receive(self.silence_limit, self.reconnect_delay)
                try:
                    await self._handle(raw)
                except ConnectionClosed as exc:
                    raise TransientError(
                        "feishu gateway socket closed while acking", self.reconnect_delay()
                    ) from exc
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    async def _ping_loop(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self._send(ws, frames.control_frame(frames.PING, self._service))
                await asyncio.sleep(self.ping_interval)

    async def _send(self, ws: ClientConnection, frame: Frame) -> None:
        async with self._send_lock:
            await ws.send(frames.encode(frame))

    def _invalid(self, why: str, reason: str = UNREADABLE) -> None:
        self.socket.drop(why, reason)

    async def _handle(self, raw: str | bytes) -> None:
        if isinstance(raw, str):
            self._invalid("text frame (the gateway speaks binary pbbp2)")
            return
        try:
            frame = frames.decode(raw)
        except FrameError as exc:
            self._invalid(str(exc))
            return
        headers = frames.headers_of(frame)
        kind = headers.get(frames.TYPE, "")
        if frame.method == FrameMethod.CONTROL:
            if kind == frames.PONG and frame.payload:
                self._pong(frame.payload)
            return
        if frame.method != FrameMethod.DATA:
            self._invalid(f"unknown frame method {frame.method}")
            return
        if kind == frames.EVENT:
            await self._event(frame, headers)
        elif kind == frames.CARD:
            await self._ack(frame, ACK_OK, time.monotonic())  # card callbacks are not used
        else:
            self._invalid(f"unknown data frame type {kind[:40]!r}")

    def _pong(self, payload: bytes) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            self._invalid("pong with an unreadable ClientConfig")
            return
        except RecursionError:
            # the C decoder gives up past the interpreter's recursion limit; uncaught, it would
            # end the reader task and with it the session
            self._invalid("pong nested deeper than the JSON decoder goes", TOO_DEEP)
            return
        if isinstance(data, dict):
            updated = self.client_config.updated(data)
            if updated != self.client_config:
                self._log.debug("feishu gateway updated the client config: %s", updated)
            self.client_config = updated

    async def _event(self, frame: Frame, headers: dict[str, str]) -> None:
        received_at = time.monotonic()
        try:
            total = int(headers.get(frames.SUM, "1"))
            index = int(headers.get(frames.SEQ, "0"))
            if not 1 <= total <= MAX_PARTS:
                raise FrameError(f"an event in {total} parts")
            whole = self._parts.add(headers.get(frames.MESSAGE_ID, ""), total, index, frame.payload)
        except (ValueError, FrameError) as exc:
            self._invalid(f"bad part headers: {exc}")
            return
        if whole is None:
            return  # only the part that completes the event is answered
        event = self.socket.json_object(whole, "event payload")
        if event is None:
            # acked anyway: an unreadable event would only come back again
            await self._ack(frame, ACK_OK, received_at)
            return
        try:
            await self._on_event(event)
        except Exception as exc:  # noqa: BLE001 - whatever stopped the journal, ask for a redelivery
            self._log.warning(
                "event not journaled, asking the gateway to redeliver it: %s: %s",
                type(exc).__name__,
                exc,
            )
            await self._ack(frame, ACK_FAILED, received_at)
            return
        await self._ack(frame, ACK_OK, received_at)

    async def _ack(self, frame: Frame, code: int, received_at: float) -> None:
        ws = self.socket.ws
        if ws is None:
            return
        elapsed = time.monotonic() - received_at
        await self._send(ws, frames.ack_frame(frame, code, round(elapsed * 1000)))
        if code == ACK_OK and self._on_ack is not None:
            self._on_ack(time.monotonic() - received_at)

    async def close(self) -> None:
        """Close the socket, bounded by the websocket close timeout."""
        await self.socket.close()
