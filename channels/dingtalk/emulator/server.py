"""`DingTalkEmulator`: a local DingTalk (Stream gateway + OpenAPI + control plane) on one port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from channels.dingtalk.emulator.control import add_control_routes
from channels.dingtalk.emulator.gateway import ConnectionInfo, Gateway, SentFrame, app_uuid
from channels.dingtalk.emulator.openapi import TOKEN_HEADER, OpenApi
from channels.dingtalk.emulator.payloads import (
    BOT_MESSAGE_TOPIC,
    MEDIA_MSGTYPES,
    UserMessage,
    bot_message,
    make_frame,
)
from channels.dingtalk.emulator.state import (
    CLIENT_ID_KEY,
    DEFAULT_CONTENT_KEY,
    AckRecord,
    ApiError,
    AppSpec,
    CallRecord,
    CardState,
    ChatItem,
    EmulatorState,
    Fault,
    Session,
    default_fault_body,
    stable_id,
    to_app,
)
from channels.emulator.control import CONTROL_PREFIX
from channels.emulator.state import wait_until

T = TypeVar("T")

DEFAULT_APPS: tuple[AppSpec, ...] = (("ding-emulator", "secret-emulator"),)
DEFAULT_TEMPLATE = "tpl.ai.schema"
DEFAULT_CORP_ID = "ding" + "0" * 8 + "emulator"
_SECRET_FIELDS = frozenset({"clientSecret", "appSecret"})


class DingTalkEmulator:
    """A faithful local DingTalk for the real SDK, our own client and `channeld chat`."""

    def __init__(
        self,
        apps: Iterable[AppSpec] = DEFAULT_APPS,
        *,
        templates: Mapping[str, str] | Iterable[str] = (DEFAULT_TEMPLATE,),
        ping_interval: float | None = 30.0,
        session_validity: float = 90 * 60,
        token_ttl: int = 7200,
        disconnect_grace: float = 10.0,
        ticket_ttl: float = 90.0,
        deliver_unmentioned: bool = False,
        corp_id: str = DEFAULT_CORP_ID,
        rng: random.Random | None = None,
        hold_when_offline: bool = False,
    ) -> None:
        if not isinstance(templates, Mapping):
            templates = dict.fromkeys(templates, DEFAULT_CONTENT_KEY)
        self.state = EmulatorState([to_app(a) for a in apps], templates)
        self.gateway = Gateway(
            self.state,
            ping_interval=ping_interval,
            disconnect_grace=disconnect_grace,
            ticket_ttl=ticket_ttl,
            rng=rng or random.Random(),  # noqa: S311 - load balancing, not security
        )
        # DingTalk keeps a message for an app that is offline; off by default so that tests see
        # an undeliverable message at once
        self.gateway.hold_offline = hold_when_offline
        self.openapi = OpenApi(self.state, token_ttl=token_ttl)
        self.session_validity = session_validity
        self.deliver_unmentioned = deliver_unmentioned
        self.corp_id = corp_id
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._stopping = asyncio.Event()
        self._seq = 0

    @property
    def url(self) -> str:
        """`http://host:port`: the OpenAPI base (DINGTALK_OPENAPI_ENDPOINT) and control plane."""
        if not self._url:
            raise RuntimeError("emulator not started")
        return self._url

    @property
    def apps(self) -> list[str]:
        """Configured client ids."""
        return list(self.state.apps)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Binds and serves; returns the base URL."""
        app = web.Application(middlewares=[self._middleware])
        self.gateway.add_routes(app)
        self.openapi.add_routes(app)
        add_control_routes(app, self)
        # Short shutdown: in-flight handlers are our own latency sleeps and closed sockets.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        public_host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - only compared
        self._url = f"http://{public_host}:{bound_port}"
        return self._url

    async def stop(self) -> None:
        """Closes every socket and the server; leaves no task behind."""
        self._stopping.set()
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        arrived = time.monotonic()
        raw = await request.read()  # cached by aiohttp, so handlers can read it again
        fault = self.state.take_fault(request.method, request.path)
        delay = self.state.latency + (fault.latency if fault else 0.0)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        response: web.StreamResponse
        if fault is not None and fault.status:
            body = fault.body if fault.body is not None else default_fault_body(fault.status)
            headers = (
                {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
            )
            response = web.json_response(body, status=fault.status, headers=headers)
        else:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = web.json_response(exc.body(), status=exc.status)
            except web.HTTPException as exc:  # e.g. 404 for an endpoint the emulator lacks
                self._record(request, arrived, raw, exc.status, faulted=False)
                raise
        faulted = fault is not None and bool(fault.status)
        self._record(request, arrived, raw, response.status, faulted=faulted)
        return response

    def _record(
        self, request: web.Request, arrived: float, raw: bytes, status: int, *, faulted: bool
    ) -> None:
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        if isinstance(body, dict):
            # Recordings end up in test output and control-plane answers: keep credentials out.
            body = {k: "***" if k in _SECRET_FIELDS else v for k, v in body.items()}
        client_id = request.get(CLIENT_ID_KEY, "")
        if not client_id:
            token = request.headers.get(TOKEN_HEADER, "")
            client_id = (self.state.app_for_token(token) or "") if token else ""
        self._seq += 1
        self.state.calls.append(
            CallRecord(
                self._seq,
                arrived,
                request.method,
                request.path,
                dict(request.query),
                body,
                status,
                client_id,
                faulted,
            )
        )
        self.state.notify()

    # -- users and frames ------------------------------------------------------------------------

    async def send_user_message(
        self,
        client_id: str,
        *,
        text: str = "",
        conversation_type: str = "1",
        conversation_id: str | None = None,
        conversation_title: str = "Emulated group",
        sender_staff_id: str = "user-1",
        sender_nick: str = "Emulated User",
        mentioned: bool = True,
        msgtype: str = "text",
        at_staff_ids: Iterable[str] = (),
        download_code: str | None = None,
        file_name: str = "",
        is_admin: bool = False,
        deliver_unmentioned: bool | None = None,
        extra: dict[str, Any] | None = None,
        connection_id: str | None = None,
    ) -> UserMessage:
        """A user writes to the bot: records it in the chat and pushes the CALLBACK frame."""
        app = self.state.apps[client_id]
        if conversation_id is None:
            if conversation_type == "1":
                conversation_id = self.state.direct_conversation_id(client_id, sender_staff_id)
            else:
                conversation_id = "cid" + stable_id("group", client_id, conversation_title) + "=="
        elif conversation_type == "1":
            self.state.direct[(client_id, sender_staff_id)] = conversation_id
        conv = self.state.conversation(
            client_id, conversation_id, conversation_type, conversation_title
        )
        token = secrets.token_hex(16)
        now_ms = int(time.time() * 1000)
        expires_ms = now_ms + int(self.session_validity * 1000)
        webhook = f"{self.url}/robot/sendBySession?session={token}"
        payload = bot_message(
            app,
            corp_id=self.corp_id,
            text=text,
            msgtype=msgtype,
            conversation_type=conversation_type,
            conversation_id=conversation_id,
            conversation_title=conversation_title,
            sender_staff_id=sender_staff_id,
            sender_nick=sender_nick,
            mentioned=mentioned,
            at_staff_ids=list(at_staff_ids),
            session_webhook=webhook,
            session_expires_ms=expires_ms,
            create_at_ms=now_ms,
            download_code=download_code,
            file_name=file_name,
            is_admin=is_admin,
            extra=extra,
        )
        self.state.sessions[token] = Session(
            client_id, conversation_id, sender_staff_id, expires_ms
        )
        item = ChatItem(
            self.state.next_item_id(), "user", time.monotonic(), "stream", msgtype, text
        )
        item.sender = sender_nick
        self.state.add_item(conv, item)
        frame = make_frame("CALLBACK", BOT_MESSAGE_TOPIC, payload, app_id=app_uuid(client_id))
        message_id = frame["headers"]["messageId"]
        reason = ""
        unmentioned_ok = (
            self.deliver_unmentioned if deliver_unmentioned is None else deliver_unmentioned
        )
        if conversation_type == "2" and not mentioned and not unmentioned_ok:
            reason = "group message without @bot is not delivered"
        elif conversation_type == "2" and msgtype in MEDIA_MSGTYPES:
            reason = f"{msgtype} messages are delivered only in single chats"
        connection = ""
        if not reason:
            try:
                sent = await self.push_frame(client_id, frame, connection_id=connection_id)
            except LookupError:
                reason = "no live Stream connection"
            else:
                connection = sent.connection_id
                if not sent.delivered:
                    reason = (
                        "connection is silenced"
                        if connection
                        else "no live connection: held for the next one"
                    )
        return UserMessage(
            not reason,
            reason,
            message_id,
            payload["msgId"],
            conversation_id,
            connection,
            webhook,
            item.id,
        )

    async def push_frame(
        self, client_id: str, frame: dict[str, Any], *, connection_id: str | None = None
    ) -> SentFrame:
        """Pushes a raw frame to one live connection of the app."""
        return await self.gateway.push(client_id, frame, connection_id=connection_id)

    async def push_raw(self, client_id: str, data: str | bytes) -> str:
        """Pushes arbitrary text or bytes as one WebSocket frame; returns the connection id."""
        return await self.gateway.push_raw(client_id, data)

    async def redeliver(self, frame_message_id: str) -> SentFrame:
        """Sends an earlier frame again, identical, as DingTalk does after a missing ack."""
        return await self.gateway.redeliver(frame_message_id)

    # -- faults ----------------------------------------------------------------------------------

    async def drop(
        self, client_id: str, *, mode: str = "abort", connection_id: str | None = None
    ) -> int:
        """Kills the app's sockets: `abort` (no close frame) or `close` (code 1011)."""
        return await self.gateway.drop(client_id, mode=mode, connection_id=connection_id)

    async def system_disconnect(
        self,
        client_id: str,
        reason: str = "persistent connection is timeout",
        *,
        grace: float | None = None,
        connection_id: str | None = None,
    ) -> int:
        """SYSTEM disconnect; TCP is closed after the grace period if the client has not."""
        return await self.gateway.system_disconnect(
            client_id, reason, grace=grace, connection_id=connection_id
        )

    async def gateway_outage(self, on: bool = True) -> int:
        """Kills the Stream gateway (sockets reset, reconnects refused, pushes held) or revives it.

        The OpenAPI (tokens, cards, robot sends) stays up, as DingTalk serves it from other hosts.
        """
        return await self.gateway.outage(on)

    def silence(self, client_id: str, on: bool = True, *, connection_id: str | None = None) -> int:
        """Turns the app's current sockets into zombies (open, but no pings or deliveries)."""
        return self.gateway.silence(client_id, on, connection_id=connection_id)

    def add_fault(
        self,
        path_pattern: str,
        status: int | None = None,
        *,
        times: int | None = 1,
        body: Any = None,
        retry_after: float | None = None,
        latency: float = 0.0,
        method: str | None = None,
    ) -> Fault:
        """Answers the next `times` matching calls with `status` (None: only delay them)."""
        fault = Fault(path_pattern, status, times, body, retry_after, latency, method)
        self.state.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Removes every injected fault and the global latency."""
        self.state.faults.clear()
        self.state.latency = 0.0

    def set_latency(self, seconds: float) -> None:
        """Delays every OpenAPI / gateway call (not the control plane)."""
        self.state.latency = seconds

    def fail_deliveries(self, times: int = 1, error_msg: str = "robot is not in the group") -> None:
        """The next card deliveries report `success: false` inside an HTTP 200."""
        self.state.failing_deliveries.extend([error_msg] * times)

    def expire_tokens(self) -> int:
        """Invalidates every access token issued so far."""
        return self.openapi.expire_tokens()

    def expire_sessions(self) -> int:
        """Every sessionWebhook handed out so far stops working."""
        for session in self.state.sessions.values():
            session.revoked = True
        return len(self.state.sessions)

    # -- observations ----------------------------------------------------------------------------

    def connections(self, client_id: str | None = None) -> list[ConnectionInfo]:
        """Every connection ever opened, closed ones included."""
        return self.gateway.connections(client_id)

    def live_connections(self, client_id: str | None = None) -> list[ConnectionInfo]:
        """Sockets that are still open."""
        return [c for c in self.gateway.connections(client_id) if c.live]

    def sent_frames(self, topic: str | None = None) -> list[SentFrame]:
        """Frames pushed so far, pings and disconnects included."""
        return [f for f in self.gateway.sent.values() if topic is None or f.topic == topic]

    def acks(self, message_id: str | None = None) -> list[AckRecord]:
        """Frames the clients sent back, in arrival order."""
        return [a for a in self.state.acks if message_id is None or a.message_id == message_id]

    def calls(self, path: str | None = None, method: str | None = None) -> list[CallRecord]:
        """Recorded HTTP calls, optionally filtered by exact path and method."""
        return [
            c
            for c in self.state.calls
            if (path is None or c.path == path) and (method is None or c.method == method.upper())
        ]

    def card(self, out_track_id: str) -> CardState | None:
        """A copy of one card's state."""
        return self.state.card_copy(out_track_id)

    def cards(self) -> list[CardState]:
        """Copies of every card, oldest first."""
        return [c for c in (self.state.card_copy(k) for k in self.state.cards) if c is not None]

    def chat_view(self, conversation_id: str) -> dict[str, Any] | None:
        """What the user sees in a chat: their messages, bot messages and cards as they are now."""
        return self.state.chat_view(conversation_id)

    async def wait_until(
        self,
        predicate: Callable[[DingTalkEmulator], T],
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for a condition, not for one await
    ) -> T:
        """Returns the predicate's first truthy value; re-checked on every state change."""
        return await wait_until(lambda: predicate(self), self.state.wait_changed, timeout)
