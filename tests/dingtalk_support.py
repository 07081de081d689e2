"""DingTalk test helpers: a threaded emulator fixture, the SDK pointed at it, a raw Stream client.

Bring the fixture into a test module by name (`dingtalk_emulator =
dingtalk_support.dingtalk_emulator`, or import it), then drive it from the test's loop:
    sent = await dingtalk_emulator.send_user_message(DINGTALK_CLIENT_ID, text="hi")
    await dingtalk_emulator.wait_for(lambda e: e.acks(sent.frame_message_id))
    view = await dingtalk_emulator.call(lambda e: e.chat_view(sent.conversation_id))
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import aiohttp
import dingtalk_stream.card_replier
import dingtalk_stream.chatbot
import dingtalk_stream.stream
import pytest

# 0.24.3 names `websockets.exceptions` in an except clause before anything imports it
# (docs/platforms/dingtalk.md §5.4).
import websockets.exceptions  # noqa: F401

from channels.dingtalk.api import DingTalkApi
from channels.dingtalk.emulator import EmulatorThread

DINGTALK_CLIENT_ID = "ding-test"
DINGTALK_CLIENT_SECRET = "secret-test"
DINGTALK_TEMPLATE = "tpl.ai.schema"
FAST_PING = 0.2  # seconds between SYSTEM pings in tests


@pytest.fixture
async def dingtalk_emulator() -> AsyncIterator[EmulatorThread]:
    """A DingTalk emulator on its own thread: app ding-test/secret-test, template tpl.ai.schema."""
    async with EmulatorThread(
        [(DINGTALK_CLIENT_ID, DINGTALK_CLIENT_SECRET)],
        templates=[DINGTALK_TEMPLATE],
        ping_interval=FAST_PING,
        disconnect_grace=1.0,
    ) as emulator:
        yield emulator


@contextlib.contextmanager
def sdk_pointed_at(base_url: str) -> Iterator[None]:
    """Aims an imported dingtalk-stream 0.24.3 at `base_url` (docs/platforms/dingtalk.md §4.1)."""
    client_cls = dingtalk_stream.stream.DingTalkStreamClient
    modules = (dingtalk_stream.stream, dingtalk_stream.chatbot, dingtalk_stream.card_replier)
    saved_api = client_cls.OPEN_CONNECTION_API
    saved = [m.DINGTALK_OPENAPI_ENDPOINT for m in modules]
    client_cls.OPEN_CONNECTION_API = base_url + "/v1.0/gateway/connections/open"
    for module in modules:
        module.DINGTALK_OPENAPI_ENDPOINT = base_url
    try:
        yield
    finally:
        client_cls.OPEN_CONNECTION_API = saved_api
        for module, value in zip(modules, saved, strict=True):
            module.DINGTALK_OPENAPI_ENDPOINT = value


async def stop_sdk_client(client: Any, task: asyncio.Task[None]) -> None:
    """Stops a 0.24.3 `start()` task and the tasks it orphaned (docs/platforms/dingtalk.md §5.3)."""
    # 0.24.3 catches the first CancelledError and sleeps 10 s; a later cancel lands in that sleep
    # and ends the task. Cancel until it is done, checking after each attempt.
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if client.websocket is not None:
        await client.websocket.close()
    # One keepalive task per connection ever opened, plus frame handlers still in flight.
    orphans = [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "").startswith("DingTalkStreamClient.")
    ]
    for orphan in orphans:
        orphan.cancel()
    await asyncio.gather(*orphans, return_exceptions=True)


def system_ack(frame: dict[str, Any]) -> dict[str, Any]:
    """The ack 0.24.3 sends for a SYSTEM frame (docs/platforms/dingtalk.md §1.4)."""
    headers = {"contentType": "application/json", "messageId": frame["headers"]["messageId"]}
    return {"code": 200, "headers": headers, "message": "OK", "data": frame["data"]}


def callback_ack(frame: dict[str, Any], response: Any = "OK") -> dict[str, Any]:
    """The ack 0.24.3 sends for a CALLBACK frame whose handler returned (200, response)."""
    headers = {"contentType": "application/json", "messageId": frame["headers"]["messageId"]}
    return {
        "code": 200,
        "headers": headers,
        "message": "",
        "data": json.dumps({"response": response}),
    }


class RawStreamClient:
    """A minimal Stream client speaking the wire protocol itself, acking like the SDK."""

    def __init__(
        self,
        base_url: str,
        client_id: str = DINGTALK_CLIENT_ID,
        client_secret: str = DINGTALK_CLIENT_SECRET,
        *,
        on_callback: Callable[[dict[str, Any]], Coroutine[Any, Any, None]] | None = None,
        auto_ack: bool = True,
    ) -> None:
        self.api = DingTalkApi(
            client_id=client_id,
            client_secret=client_secret,
            api_base=base_url,
            robot_code=client_id,
            timeout=5.0,
        )
        self.frames: list[dict[str, Any]] = []
        self.raw_frames: list[str] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._on_callback = on_callback
        self._auto_ack = auto_ack
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        """Opens a connection (ticket, then WebSocket) and starts reading frames."""
        subscriptions = [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]
        endpoint, ticket = await self.api.open_connection(subscriptions, "raw-test-client")
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(f"{endpoint}?ticket={ticket}", autoping=True)
        self._reader = asyncio.create_task(self._read(self._ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            self.raw_frames.append(msg.data)
            self.frames.append(frame)
            if not self._auto_ack:
                continue
            if frame["type"] == "SYSTEM":
                await self.send(system_ack(frame))
            elif frame["type"] == "CALLBACK":
                await self.send(callback_ack(frame))
                if self._on_callback is not None:
                    task = asyncio.create_task(self._on_callback(frame))
                    self._handlers.add(task)
                    task.add_done_callback(self._handlers.discard)
        self.close_code = ws.close_code
        self.closed.set()

    async def send(self, payload: dict[str, Any]) -> None:
        """Sends one JSON frame to the gateway."""
        assert self._ws is not None
        await self._ws.send_str(json.dumps(payload))

    def topics(self, frame_type: str) -> list[str]:
        """Topics of the frames of one type received so far."""
        return [f["headers"]["topic"] for f in self.frames if f["type"] == frame_type]

    async def close(self) -> None:
        """Closes the socket, stops reading and releases everything."""
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader
        if self._http is not None:
            await self._http.close()
        await self.api.close()


class Screen(io.StringIO):
    """Captured terminal output that tests can wait on."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def write(self, text: str) -> int:
        self.changed.set()
        return super().write(text)

    async def shows(self, needle: str) -> None:
        while needle not in self.getvalue():
            self.changed.clear()
            await self.changed.wait()
