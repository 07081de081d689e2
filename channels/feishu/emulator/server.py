"""`FeishuEmulator`: a local Feishu/Lark (long-connection gateway + OpenAPI + control plane)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from aiohttp import web

from channels.emulator.state import wait_until
from channels.feishu import frames
from channels.feishu.emulator.cardkit import CardKit
from channels.feishu.emulator.control import add_control_routes
from channels.feishu.emulator.events import REDELIVERY_SCHEDULE, Delivery
from channels.feishu.emulator.gateway import FORBIDDEN, ConnectionInfo, Gateway
from channels.feishu.emulator.http import recording_middleware
from channels.feishu.emulator.openapi import OpenApi
from channels.feishu.emulator.payloads import (
    Mention,
    UserMessage,
    new_event_id,
    new_message_id,
    now_ms,
    receive_event,
    user_content,
)
from channels.feishu.emulator.state import (
    DISCOVERY_PATH,
    AckRecord,
    AppSpec,
    CallRecord,
    CardState,
    ChatItem,
    EmulatorState,
    Fault,
    stable_hex,
    to_app,
)

T = TypeVar("T")

DEFAULT_APP_ID = "cli_0123456789abcdef"  # the node SDK insists on cli_ + 16 hex digits
DEFAULT_APP_SECRET = "feishu-emulator-secret"  # noqa: S105 - the emulator's own demo credential
DEFAULT_APPS: tuple[AppSpec, ...] = ((DEFAULT_APP_ID, DEFAULT_APP_SECRET),)


class FeishuEmulator:
    """A faithful local Feishu for lark-oapi's ws client, our own client and end-to-end tests."""

    def __init__(
        self,
        apps: Iterable[AppSpec] = DEFAULT_APPS,
        *,
        ping_interval: float = 120.0,
        reconnect_interval: float = 120.0,
        reconnect_nonce: float = 30.0,
        reconnect_count: int = -1,
        redelivery_schedule: Sequence[float] = REDELIVERY_SCHEDULE,
        token_ttl: int = 7200,
        streaming_timeout: float = 600.0,
        card_ops_per_second: int = 10,
        app_ops_per_second: int = 50,
        max_connections: int = 50,
        ticket_ttl: float = 300.0,
        group_msg_scope: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.state = EmulatorState([to_app(a) for a in apps])
        self.state.streaming_timeout = streaming_timeout
        config = frames.ClientConfig(
            reconnect_count=reconnect_count,
            reconnect_interval=reconnect_interval,
            reconnect_nonce=reconnect_nonce,
            ping_interval=ping_interval,
        )
        self.gateway = Gateway(
            self.state,
            client_config=config,
            redelivery_schedule=redelivery_schedule,
            max_connections=max_connections,
            ticket_ttl=ticket_ttl,
            rng=rng or random.Random(),  # noqa: S311 - load balancing, not security
        )
        self.openapi = OpenApi(self.state, token_ttl=token_ttl)
        self.cardkit = CardKit(
            self.state,
            self.openapi.authenticate,
            card_ops_per_second=card_ops_per_second,
            app_ops_per_second=app_ops_per_second,
        )
        self.group_msg_scope = group_msg_scope
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._stopping = asyncio.Event()

    @property
    def url(self) -> str:
        """`http://host:port`: the `domain` for clients, and the control plane."""
        if not self._url:
            raise RuntimeError("emulator not started")
        return self._url

    @property
    def apps(self) -> list[str]:
        """Configured app ids."""
        return list(self.state.apps)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Binds and serves; returns the base URL."""
        app = web.Application(middlewares=[recording_middleware(self.state, self._stopping)])
        self.gateway.add_routes(app)
        self.openapi.add_routes(app)
        self.cardkit.add_routes(app)
        add_control_routes(app, self)
        # Short shutdown: in-flight handlers are our own delays and closed sockets.
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

    # -- users and events ------------------------------------------------------------------------

    async def send_user_message(
        self,
        app_id: str,
        *,
        text: str = "",
        chat_type: str = "p2p",
        chat_id: str | None = None,
        chat_name: str = "Emulated group",
        sender_open_id: str = "ou_user1",
        sender_name: str = "Emulated User",
        mention_bot: bool = True,
        mentions: Iterable[Mention | str | Mapping[str, Any]] = (),
        message_type: str = "text",
        content: Mapping[str, Any] | None = None,
        parent_id: str = "",
        group_msg_scope: bool | None = None,
        parts: int = 1,
        connection_id: str | None = None,
    ) -> UserMessage:
        """A user writes to the bot: records it in the chat and pushes `im.message.receive_v1`.

        In a group the text starts with `@_user_N` placeholders for the mentioned (the bot
        first when `mention_bot`); a group message that does not mention the bot is delivered
        only with the `group_msg_scope` permission.
        """
        app = self.state.apps[app_id]
        if chat_type not in ("p2p", "group"):
            raise ValueError("chat_type must be 'p2p' or 'group'")
        if chat_id is None:
            chat_id = (
                self.state.p2p_chat_id(app_id, sender_open_id)
                if chat_type == "p2p"
                else "oc_" + stable_hex("group", app_id, chat_name)
            )
        chat = self.state.chat(
            app_id, chat_id, chat_type, chat_name if chat_type == "group" else ""
        )
        mentioned = [Mention.of(m) for m in mentions]
        bot_mentioned = chat_type == "group" and mention_bot
        if bot_mentioned:
            mentioned.insert(0, Mention(app.bot_open_id, app.bot_name))
        keys = [f"@_user_{i}" for i in range(1, len(mentioned) + 1)]
        names = [m.name for m in mentioned]
        if content is None:
            body, shown = user_content(message_type, text, keys, names)
        else:
            body, shown = dict(content), text or f"[{message_type}]"
        message_id = new_message_id()
        event_id = new_event_id()
        payload = receive_event(
            app,
            event_id=event_id,
            message_id=message_id,
            chat_id=chat_id,
            chat_type=chat_type,
            message_type=message_type,
            content=body,
            sender_open_id=sender_open_id,
            mentions=zip(keys, mentioned, strict=True),
            create_time_ms=now_ms(),
            parent_id=parent_id,
        )
        item = ChatItem(message_id, "user", time.monotonic(), message_type, shown, sender_name)
        item.reply_to = parent_id
        item.content = json.dumps(body, ensure_ascii=False)
        self.state.add_item(chat, item)
        scope = self.group_msg_scope if group_msg_scope is None else group_msg_scope
        if chat_type == "group" and not bot_mentioned and not scope:
            reason = "group message without @bot is not delivered (no im:message.group_msg scope)"
            return UserMessage(False, reason, event_id, message_id, chat_id, "", "", message_id)
        delivery = await self.gateway.events.push(
            app_id, payload, parts=parts, connection_id=connection_id
        )
        reason = ""
        if not delivery.connection_id:
            reason = "no live connection"
        elif not delivery.delivered:
            reason = "connection is silenced"
        return UserMessage(
            not reason,
            reason,
            event_id,
            message_id,
            chat_id,
            delivery.frame_message_id,
            delivery.connection_id,
            message_id,
        )

    async def push_event(
        self,
        app_id: str,
        payload: dict[str, Any],
        *,
        parts: int = 1,
        connection_id: str | None = None,
        redeliver: bool = True,
    ) -> Delivery:
        """Pushes any event envelope (e.g. `card.action.trigger`) like a message event."""
        return await self.gateway.events.push(
            app_id, payload, parts=parts, connection_id=connection_id, redeliver=redeliver
        )

    async def redeliver(self, message_id: str, new_event_id: bool = True) -> Delivery:
        """Pushes an event again now (by om_ id or frame message id), by default as Feishu does:
        with a new `event_id` and the same `message_id`."""
        return await self.gateway.events.redeliver(message_id, new_event_id=new_event_id)

    # -- faults ----------------------------------------------------------------------------------

    def add_fault(
        self,
        path_pattern: str,
        status: int | None = None,
        *,
        code: int | None = None,
        msg: str = "",
        times: int | None = 1,
        method: str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Answers the next `times` matching calls with `status` and/or business `code`.

        With only `code`, discovery answers HTTP 200 (as the SDK expects) and the OpenAPI 400;
        with neither, the calls are only delayed by `delay` seconds.
        """
        fault = Fault(path_pattern, status, code, msg, times, method, delay)
        self.state.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Removes every injected fault, handshake rejection and the global latency."""
        self.state.faults.clear()
        self.gateway.rejections.clear()
        self.state.latency = 0.0

    def set_latency(self, seconds: float) -> None:
        """Delays every OpenAPI and discovery call (not the control plane)."""
        self.state.latency = seconds

    def reject_handshakes(
        self,
        status: int = 514,
        autherrcode: int = 1000040350,
        *,
        times: int = 1,
        msg: str = "",
    ) -> None:
        """The next `times` websocket handshakes fail with these handshake headers (HTTP 403).

        514 with 1000040350 (connection limit) and 403 are fatal for lark-oapi 1.7.5; any other
        pair makes it retry.
        """
        text = msg or ("forbidden" if status == FORBIDDEN else "auth failed")
        self.gateway.rejections.extend([(status, autherrcode, text)] * times)

    async def drop(
        self,
        app_id: str | None = None,
        *,
        mode: str = "abort",
        code: int = 1000,
        connection_id: str | None = None,
    ) -> int:
        """Kills sockets: `abort` (no close frame) or `close` (a normal close with `code`)."""
        return await self.gateway.drop(app_id, mode=mode, code=code, connection_id=connection_id)

    def silence(
        self, app_id: str | None = None, on: bool = True, *, connection_id: str | None = None
    ) -> int:
        """Sockets stay open but answer no pings and get no events (half-open zombies)."""
        return self.gateway.silence(app_id, on, connection_id=connection_id)

    def refuse_connections(self, app_id: str | None = None, on: bool = True) -> None:
        """The gateway is down for the app (None: all apps): discovery 503, handshakes 503."""
        if on:
            self.gateway.refused.add(app_id)
        else:
            self.gateway.refused.discard(app_id)
        self.state.notify()

    async def restart_gateway(self, app_id: str | None = None, downtime: float = 1.0) -> int:
        """The gateway is killed (sockets reset) and comes back after `downtime` seconds."""
        self.refuse_connections(app_id, True)
        dropped = await self.gateway.drop(app_id, mode="abort")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), downtime)
        self.refuse_connections(app_id, False)
        return dropped

    def set_client_config(self, **changes: float) -> dict[str, int | float]:
        """Changes ping/reconnect settings; sent with later discoveries and every pong."""
        fields: dict[str, Any] = dict(changes)
        self.gateway.client_config = dataclasses.replace(self.gateway.client_config, **fields)
        return self.gateway.wire_config()

    def expire_tokens(self) -> int:
        """Invalidates every tenant token issued so far (later calls get 99991663)."""
        return self.openapi.expire_tokens()

    # -- observations ----------------------------------------------------------------------------

    def connections(self, app_id: str | None = None) -> list[ConnectionInfo]:
        """Every connection ever opened, closed ones included."""
        return self.gateway.connections(app_id)

    def live_connections(self, app_id: str | None = None) -> list[ConnectionInfo]:
        """Sockets that are still open."""
        return [c for c in self.gateway.connections(app_id) if c.live]

    def discoveries(self, app_id: str | None = None) -> list[CallRecord]:
        """Every `/callback/ws/endpoint` call (faulted ones included), by the AppID it carried."""
        return [
            c
            for c in self.calls(DISCOVERY_PATH)
            if app_id is None or (isinstance(c.body, dict) and c.body.get("AppID") == app_id)
        ]

    def deliveries(self, message_id: str | None = None) -> list[Delivery]:
        """Every event push, optionally of one om_ id, oldest first (copies)."""
        return [
            Delivery(**vars(d))
            for d in self.gateway.events.deliveries.values()
            if message_id is None or d.message_id == message_id
        ]

    def acks(self, frame_message_id: str | None = None) -> list[AckRecord]:
        """Response frames the clients sent, in arrival order."""
        return [
            a
            for a in self.state.acks
            if frame_message_id is None or a.frame_message_id == frame_message_id
        ]

    def calls(self, path: str | None = None, method: str | None = None) -> list[CallRecord]:
        """Recorded HTTP calls, optionally filtered by exact path and method."""
        return [
            c
            for c in self.state.calls
            if (path is None or c.path == path) and (method is None or c.method == method.upper())
        ]

    def card(self, card_id: str) -> CardState | None:
        """A copy of one card's state."""
        return self.state.card_copy(card_id)

    def cards(self) -> list[CardState]:
        """Copies of every card, oldest first."""
        return [c for c in (self.state.card_copy(k) for k in self.state.cards) if c is not None]

    def chat_view(self, chat_id: str) -> dict[str, Any] | None:
        """What members see in a chat: user messages, bot messages and cards as they are now."""
        return self.state.chat_view(chat_id)

    async def wait_until(
        self,
        predicate: Callable[[FeishuEmulator], T],
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for a condition, not for one await
    ) -> T:
        """Returns the predicate's first truthy value; re-checked on every state change."""
        return await wait_until(lambda: predicate(self), self.state.wait_changed, timeout)
