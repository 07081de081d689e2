"""`FeishuEmulator`: a local Feishu/Lark (long-connection gateway + OpenAPI + control plane)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from channels.emulator.http import APP_KEY
from channels.emulator.server import EmulatorServer
from channels.emulator.state import RecordedCall, app_records
from channels.feishu import frames
from channels.feishu.emulator.cardkit import CardKit
from channels.feishu.emulator.contact import Contact
from channels.feishu.emulator.control import Control
from channels.feishu.emulator.events import REDELIVERY_SCHEDULE, Delivery
from channels.feishu.emulator.gateway import FORBIDDEN, ConnectionInfo, Gateway
from channels.feishu.emulator.http import code_of, fault_response
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
    FeishuApp,
    stable_hex,
)

DEFAULT_APP_ID = "cli_0123456789abcdef"  # the node SDK insists on cli_ + 16 hex digits
DEFAULT_APP_SECRET = "feishu-emulator-secret"  # noqa: S105 - the emulator's own demo credential
DEFAULT_APPS: tuple[AppSpec, ...] = ((DEFAULT_APP_ID, DEFAULT_APP_SECRET),)


class FeishuEmulator(EmulatorServer[Fault, CallRecord, CardState, ConnectionInfo]):
    """A faithful local Feishu for lark-oapi's ws client, our own client and end-to-end tests.

    Its `url` is the `domain` for clients, and the control plane.
    """

    secret_fields = frozenset({"AppSecret", "app_secret"})

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
        contact_denied: str = "",
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self.state: EmulatorState = EmulatorState(app_records(apps, FeishuApp))
        self.state.streaming_timeout = streaming_timeout
        config = frames.ClientConfig(
            reconnect_count=reconnect_count,
            reconnect_interval=reconnect_interval,
            reconnect_nonce=reconnect_nonce,
            ping_interval=ping_interval,
        )
        self.gateway: Gateway = Gateway(
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
        self.contact = Contact(self.openapi.authenticate, denied=contact_denied)
        self.group_msg_scope = group_msg_scope

    def add_routes(self, app: web.Application) -> None:
        """Discovery and `/ws/v2`, the OpenAPI, CardKit, contacts and the control plane."""
        self.gateway.add_routes(app)
        self.openapi.add_routes(app)
        self.cardkit.add_routes(app)
        self.contact.add_routes(app)
        Control(self).add_routes(app)

    def fault_response(self, request: web.Request, fault: Fault) -> web.Response:
        """See `channels.feishu.emulator.http.fault_response`."""
        return fault_response(request, fault)

    def call_record(
        self, request: web.Request, response: web.StreamResponse | None, call: RecordedCall
    ) -> CallRecord:
        """The call, the business code of its answer and the app it was made for."""
        return call.extended(CallRecord, code=code_of(response), app_id=request.get(APP_KEY, ""))

    def describe(self) -> list[str]:
        """The URL, the app credentials and a channel snippet for channeld.toml."""
        apps = list(self.state.apps.values())
        lines = [f"Feishu emulator listening on {self.url}"]
        # These are the emulator's own throwaway credentials, printed so a user can copy them.
        lines += [
            f"  app app_id={app.app_id} app_secret={app.app_secret} "
            f"bot={app.bot_name!r} bot_open_id={app.bot_open_id}"
            for app in apps
        ]
        return [
            *lines,
            "  channel config for channeld.toml:",
            "    [[channels]]",
            '    id = "feishu-emulated"',
            '    type = "feishu"',
            f'    app_id = "{apps[0].app_id}"',
            f'    app_secret = "{apps[0].app_secret}"',
            f'    domain = "{self.url}"',
        ]

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

    async def push_event(self, app_id: str, payload: dict[str, Any], **options: Any) -> Delivery:
        """Pushes any event envelope (e.g. `card.action.trigger`) like a message event.

        `options` are those of `EventPusher.push`: `parts`, `connection_id`, `redeliver`.
        """
        return await self.gateway.events.push(app_id, payload, **options)

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
        fault = Fault(
            path=path_pattern,
            status=status,
            code=code,
            msg=msg,
            remaining=times,
            method=method,
            delay=delay,
        )
        self.state.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Removes every injected fault, handshake rejection and the global latency."""
        super().clear_faults()
        self.gateway.rejections.clear()

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
            await asyncio.wait_for(self.stopping.wait(), downtime)
        self.refuse_connections(app_id, False)
        return dropped

    def set_client_config(self, **changes: float) -> dict[str, int | float]:
        """Changes ping/reconnect settings; sent with later discoveries and every pong."""
        fields: dict[str, Any] = dict(changes)
        self.gateway.client_config = dataclasses.replace(self.gateway.client_config, **fields)
        return self.gateway.wire_config()

    # -- observations ----------------------------------------------------------------------------

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
