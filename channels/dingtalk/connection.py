"""One Stream-mode session on top of dingtalk-stream 0.24.3's client.

Written against dingtalk-stream 0.24.3, whose `start()` cannot run inside a daemon
(docs/platforms/dingtalk.md §5). This subclass keeps the SDK's frame parsing, handler routing and
ack frames, and replaces the connection loop:

- `open_connection()` there is a blocking `requests.post` with no timeout; here the open call goes
  through our aiohttp client (timeout, `api_base` honoured, credentials errors classified).
- `start()` there catches the first `CancelledError` and sleeps 10 s; `start()` is never called
  here, and `run()` lets cancellation through.
- `stream.py` there names `websockets.exceptions` in an `except` clause before anything imported
  it; importing it below makes that attribute exist whatever path the SDK takes.
- the SDK acks only after `process()` returns; our handler's `process()` only journals the message
  (the answer is produced elsewhere), so the ack follows the journal write within milliseconds.
- frames are routed one at a time, in arrival order, so the journal sees messages in order.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote_plus

import dingtalk_stream
import websockets.exceptions  # noqa: F401  (see module docstring: 0.24.3 relies on it lazily)
from dingtalk_stream import AckMessage, CallbackMessage, ChatbotMessage, EventMessage, SystemMessage
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from channels.connection import SessionSocket
from channels.dingtalk.api import DingTalkApi
from channels.observer import TOO_DEEP, UNREADABLE
from common.errors import ChannelError, TransientError

# Receives (frame messageId, decoded callback data); returning means the message is journaled.
BotMessageCallback = Callable[[str, dict[str, Any]], Awaitable[None]]

SDK_UA = "dingtalk-sdk-python/v0.24.3-union"
TAG_UNACKED = "unacked"  # route_message(): a bot message left unacked on purpose
# What the SDK's frame parsing raises on hostile input (an `int()` of a huge or infinite `time`
# header, `data` nested deeper than the JSON decoder's recursion limit...).
_UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, RecursionError)


def _rejection(exc: InvalidStatus) -> Exception:
    # the ticket is single use and short-lived: a rejected upgrade is worth a new ticket
    return TransientError(
        f"gateway refused the websocket upgrade (HTTP {exc.response.status_code})"
    )


def _reason(exc: BaseException) -> str:
    """The drop reason label of an exception from `_UNREADABLE`."""
    return TOO_DEEP if isinstance(exc, RecursionError) else UNREADABLE


class _BotMessageHandler(dingtalk_stream.CallbackHandler):  # type: ignore[misc]  # untyped SDK base
    """Journals the bot message through the callback, then lets the SDK ack it."""

    def __init__(self, on_message: BotMessageCallback, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger  # the SDK's default logger forces INFO and its own handler
        self._on_message = on_message

    async def process(self, message: CallbackMessage) -> tuple[int, str]:
        if not isinstance(message.data, dict):
            raise TypeError("callback data is not a JSON object")  # dropped unacked by the session
        await self._on_message(str(message.headers.message_id or ""), message.data)
        return AckMessage.STATUS_OK, "OK"


class DingTalkSession(dingtalk_stream.DingTalkStreamClient):  # type: ignore[misc]  # untyped SDK base
    """A single Stream-mode connection: `open()` handshakes, `run()` reads until it ends."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        api: DingTalkApi,
        on_message: BotMessageCallback,
        watchdog_seconds: float,
        logger: logging.Logger,
        on_ack: Callable[[float], None] | None = None,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(dingtalk_stream.Credential(client_id, client_secret), logger=logger)
        self.register_callback_handler(ChatbotMessage.TOPIC, _BotMessageHandler(on_message, logger))
        # the SDK's route_message() sends acks through `self.websocket`
        self.websocket: ClientConnection | None = None
        self.socket = SessionSocket("gateway", logger, on_drop)
        self._api = api
        self._watchdog = watchdog_seconds
        self._on_ack = on_ack

    def _subscriptions(self) -> list[dict[str, str]]:
        return [{"type": "CALLBACK", "topic": topic} for topic in self.callback_handler_map]

    async def start(self) -> None:
        """The SDK's endless loop is not used; see the module docstring."""
        raise NotImplementedError("use open() and run()")

    async def open(self) -> None:
        """Open-connection call and websocket handshake; raises classified errors."""
        endpoint, ticket = await self._api.open_connection(self._subscriptions(), SDK_UA)
        uri = f"{endpoint}?ticket={quote_plus(ticket)}"
        self.websocket = await self.socket.connect(uri, rejected=_rejection)
        self.pre_start()

    async def run(self) -> None:
        """Read and route frames; return on a SYSTEM disconnect, raise TransientError otherwise."""
        while True:
            raw = await self.socket.receive(self._watchdog)
            received_at = self.socket.last_frame_at
            frame = self.socket.json_object(raw, "frame")
            if frame is None:
                continue
            tag = await self.route_message(frame)
            if tag == self.TAG_DISCONNECT:
                await self.close()
                return
            if tag == TAG_UNACKED:
                continue
            if frame.get("type") == CallbackMessage.TYPE and self._on_ack is not None:
                self._on_ack(time.monotonic() - received_at)  # the SDK has sent the ack by now

    async def route_message(self, json_message: dict[str, Any]) -> str:
        """SYSTEM frames are answered here quietly (0.24.3 logs every ping as a warning)."""
        kind = json_message.get("type")
        if kind == CallbackMessage.TYPE:
            headers = json_message.get("headers")
            topic = headers.get("topic") if isinstance(headers, dict) else None
            if not isinstance(topic, str) or topic not in self.callback_handler_map:
                # 0.24.3 would log the whole frame, however large; no ack either way
                return self._drop(f"callback for a topic not subscribed: {str(topic)[:60]!r}")
        elif kind not in (SystemMessage.TYPE, EventMessage.TYPE):
            return self._drop(f"unknown frame type {str(kind)[:60]!r}")
        if kind != SystemMessage.TYPE:
            try:
                return str(await super().route_message(json_message))
            except ChannelError as exc:
                # the message could not be journaled: no ack, so the platform delivers it again;
                # the session itself is fine and stays up for that redelivery
                self.logger.warning("message not accepted, left unacked: %s", exc)
                return TAG_UNACKED
            except _UNREADABLE as exc:
                # `data` that is not JSON, a `time` header that is not a number: the SDK raises
                # before its handler; skip, do not ack
                return self._drop(f"unreadable {kind} frame: {type(exc).__name__}", _reason(exc))
        try:
            message = SystemMessage.from_dict(json_message)
            reason = (message.data or {}).get("reason", "")
        except _UNREADABLE as exc:
            return self._drop(f"unreadable SYSTEM frame: {type(exc).__name__}", _reason(exc))
        ack = await self.system_handler.raw_process(message)
        if self.websocket is not None:
            await self.websocket.send(json.dumps(ack.to_dict()))
        if message.headers.topic == SystemMessage.TOPIC_DISCONNECT:
            self.logger.info("gateway asked to reconnect: %s", str(reason)[:200])
            return str(self.TAG_DISCONNECT)
        return ""

    def _drop(self, why: str, reason: str = UNREADABLE) -> str:
        self.socket.drop(why, reason)
        return ""

    async def close(self) -> None:
        """Close the socket, bounded by the websocket close timeout."""
        self.websocket = None
        await self.socket.close()
