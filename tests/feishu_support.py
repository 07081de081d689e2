"""Feishu test helpers: a threaded emulator fixture and a raw pbbp2 long-connection client.

Names other test modules rely on (keep them stable):
* `feishu_emulator`: pytest fixture, a started `FeishuEmulatorThread` with one app
  `FEISHU_APP_ID` / `FEISHU_APP_SECRET` and `fast_options()`: `FAST_CONFIG` handed to clients
  (ping every second, reconnect at once without jitter) and `FAST_REDELIVERY` as the
  redelivery schedule. Bring it into a module by name
  (`feishu_emulator = feishu_support.feishu_emulator`).
* `fast_options()`: those options, for a test that builds its own `FeishuEmulatorThread`
  (re-exported here) with other settings, e.g. `group_msg_scope=True`.
* `RawFeishuClient`: discovery, `/ws/v2`, pings, reassembly of split events and acks, written
  against `channels.feishu.frames` only, so it can drive the gateway without our provider.

Typical use from a test's loop:
    sent = await feishu_emulator.send_user_message(FEISHU_APP_ID, text="hi", parts=2)
    acks = await feishu_emulator.wait_for(lambda e: e.acks(sent.frame_message_id))
    view = await feishu_emulator.chat_view(sent.chat_id)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channels.feishu import frames
from channels.feishu.emulator import FeishuEmulatorThread

FEISHU_APP_ID = "cli_0123456789abcdef"
FEISHU_APP_SECRET = "feishu-secret-test"
FAST_CONFIG: dict[str, float] = {
    "ping_interval": 1.0,
    "reconnect_interval": 1.0,
    "reconnect_nonce": 0.0,
}
FAST_REDELIVERY = (1.0, 2.0)  # seconds between pushes of an unacked event

__all__ = [
    "FAST_CONFIG",
    "FAST_REDELIVERY",
    "FEISHU_APP_ID",
    "FEISHU_APP_SECRET",
    "FeishuEmulatorThread",
    "RawFeishuClient",
    "fast_options",
    "feishu_emulator",
]


def fast_options() -> dict[str, Any]:
    """Emulator options for tests: quick pings and reconnects, short redelivery."""
    return {**FAST_CONFIG, "redelivery_schedule": FAST_REDELIVERY}


@pytest.fixture
async def feishu_emulator() -> AsyncIterator[FeishuEmulatorThread]:
    """A Feishu emulator on its own thread: app FEISHU_APP_ID, fast pings and redelivery."""
    async with FeishuEmulatorThread(
        [(FEISHU_APP_ID, FEISHU_APP_SECRET)], **fast_options()
    ) as emulator:
        yield emulator


class RawFeishuClient:
    """A minimal long-connection client speaking pbbp2 itself, acking like lark-oapi does."""

    def __init__(
        self,
        base_url: str,
        app_id: str = FEISHU_APP_ID,
        app_secret: str = FEISHU_APP_SECRET,
        *,
        ack_code: int | None = 200,  # None: never ack
    ) -> None:
        self.base_url = base_url
        self.app_id = app_id
        self.app_secret = app_secret
        self.ack_code = ack_code
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.received: list[frames.Frame] = []
        self.pongs: list[dict[str, Any] | None] = []
        self.pong_arrived = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.service_id = 0
        self.device_id = ""
        self.client_config: dict[str, Any] = {}
        self._reassembler = frames.Reassembler(ttl=5.0)
        self._http = aiohttp.ClientSession()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def discover(self) -> dict[str, Any]:
        """POSTs /callback/ws/endpoint; returns the answer as JSON."""
        body = {"AppID": self.app_id, "AppSecret": self.app_secret}
        async with self._http.post(
            self.base_url + "/callback/ws/endpoint", json=body, headers={"locale": "zh"}
        ) as resp:
            answer: dict[str, Any] = await resp.json()
            answer["http_status"] = resp.status
        return answer

    async def connect(self) -> None:
        """Discovery, then the websocket; frames are read in the background."""
        answer = await self.discover()
        if answer["code"] != 0:
            raise RuntimeError(f"discovery failed: {answer}")
        url = answer["data"]["URL"]
        self.client_config = answer["data"]["ClientConfig"]
        query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
        self.device_id = query["device_id"]
        self.service_id = int(query["service_id"])
        self._ws = await self._http.ws_connect(url, autoping=True)
        self._reader = asyncio.create_task(self._read(self._ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            frame = frames.decode(msg.data)
            self.received.append(frame)
            headers = frames.headers_of(frame)
            if frame.method == frames.FrameMethod.CONTROL:
                if headers.get(frames.TYPE) == frames.PONG:
                    self.pongs.append(json.loads(frame.payload) if frame.payload else None)
                    self.pong_arrived.set()
                continue
            whole = self._reassembler.add(
                headers[frames.MESSAGE_ID],
                int(headers[frames.SUM]),
                int(headers[frames.SEQ]),
                frame.payload,
            )
            if whole is None:
                continue
            if self.ack_code is not None:
                await ws.send_bytes(frames.encode(frames.ack_frame(frame, self.ack_code, 0)))
            self.events.put_nowait(json.loads(whole))
        self.close_code = ws.close_code
        self.closed.set()

    async def ping(self) -> None:
        """Sends one client ping."""
        assert self._ws is not None
        ping = frames.control_frame(frames.PING, self.service_id)
        await self._ws.send_bytes(frames.encode(ping))

    async def next_event(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next whole event, waiting at most `timeout` seconds."""
        return await asyncio.wait_for(self.events.get(), timeout)

    def data_frames(self) -> list[frames.Frame]:
        """Data frames received so far, in arrival order."""
        return [f for f in self.received if f.method == frames.FrameMethod.DATA]

    async def close(self) -> None:
        """Closes the socket, stops reading and releases everything."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader
        await self._http.close()


MESSAGES = "/open-apis/im/v1/messages"
CARDS = "/open-apis/cardkit/v1/cards"


class Api:
    """A plain HTTP client for the OpenAPI with a tenant token."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.token = ""

    async def call(
        self, method: str, path: str, body: Any = None, **params: str
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(
            method, self.base + path, json=body, params=params, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    async def login(self, secret: str = FEISHU_APP_SECRET) -> tuple[int, dict[str, Any]]:
        status, body = await self.call(
            "POST",
            "/open-apis/auth/v3/tenant_access_token/internal",
            {"app_id": FEISHU_APP_ID, "app_secret": secret},
        )
        self.token = body.get("tenant_access_token", self.token)
        return status, body

    async def send(self, chat_id: str, msg_type: str, content: Any, **extra: Any) -> Any:
        body = {"receive_id": chat_id, "msg_type": msg_type, "content": json.dumps(content)}
        return await self.call("POST", MESSAGES, {**body, **extra}, receive_id_type="chat_id")

    async def reply(self, om: str, msg_type: str, content: Any, **extra: Any) -> Any:
        body = {"msg_type": msg_type, "content": json.dumps(content), **extra}
        return await self.call("POST", f"{MESSAGES}/{om}/reply", body)

    async def create_card(self, card: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return await self.call("POST", CARDS, {"type": "card_json", "data": json.dumps(card)})

    async def stream(self, card_id: str, text: str, sequence: int, **extra: Any) -> Any:
        path = f"{CARDS}/{card_id}/elements/markdown_1/content"
        return await self.call("PUT", path, {"content": text, "sequence": sequence, **extra})

    async def settings(self, card_id: str, config: dict[str, Any], sequence: int) -> Any:
        body = {"settings": json.dumps({"config": config}), "sequence": sequence}
        return await self.call("PATCH", f"{CARDS}/{card_id}/settings", body)


@pytest.fixture
async def api(feishu_emulator: FeishuEmulatorThread) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        client = Api(http, feishu_emulator.url)
        await client.login()
        yield client


def streaming_card(text: str = "Thinking...") -> dict[str, Any]:
    return {
        "schema": "2.0",
        "config": {"streaming_mode": True, "summary": {"content": ""}},
        "body": {"elements": [{"tag": "markdown", "content": text, "element_id": "markdown_1"}]},
    }


@pytest.fixture
async def raw(feishu_emulator: FeishuEmulatorThread) -> AsyncIterator[RawFeishuClient]:
    """A raw long-connection client, connected to the emulator's app."""
    client = RawFeishuClient(feishu_emulator.url)
    await client.connect()
    await feishu_emulator.wait_for(lambda e: e.live_connections(FEISHU_APP_ID))
    yield client
    await client.close()
