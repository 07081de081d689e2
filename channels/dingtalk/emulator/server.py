"""`DingTalkEmulator`: a local DingTalk (Stream gateway + OpenAPI + control plane) on one port."""

from __future__ import annotations

import dataclasses
import random
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from channels.dingtalk.emulator.control import Control
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
    DEFAULT_CONTENT_KEY,
    PROFILE_ACCESS,
    AckRecord,
    AppSpec,
    CallRecord,
    CardState,
    ChatItem,
    EmulatedUser,
    EmulatorApp,
    EmulatorState,
    Fault,
    Session,
    default_fault_body,
    stable_id,
)
from channels.emulator.http import APP_KEY
from channels.emulator.server import EmulatorServer
from channels.emulator.state import RecordedCall, app_records

DEFAULT_APPS: tuple[AppSpec, ...] = (("ding-emulator", "secret-emulator"),)
DEFAULT_TEMPLATE = "tpl.ai.schema"
DEFAULT_CORP_ID = "ding" + "0" * 8 + "emulator"


class DingTalkEmulator(EmulatorServer[Fault, CallRecord, CardState, ConnectionInfo]):
    """A faithful local DingTalk for the real SDK, our own client and `channeld chat`.

    Its `url` is the OpenAPI base (DINGTALK_OPENAPI_ENDPOINT) and the control plane.
    """

    secret_fields = frozenset({"clientSecret", "appSecret"})

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
        profile_access: str = "full",
    ) -> None:
        super().__init__()
        if not isinstance(templates, Mapping):
            templates = dict.fromkeys(templates, DEFAULT_CONTENT_KEY)
        self.state: EmulatorState = EmulatorState(app_records(apps, EmulatorApp), templates)
        self.gateway: Gateway = Gateway(
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
        self.set_profile_access(profile_access)

    def add_routes(self, app: web.Application) -> None:
        """The Stream gateway, the OpenAPI and the control plane."""
        self.gateway.add_routes(app)
        self.openapi.add_routes(app)
        Control(self).add_routes(app)

    def fault_response(self, request: web.Request, fault: Fault) -> web.Response:
        """The fault's status with its body (else a realistic one) and Retry-After."""
        status = fault.status or 500
        body = fault.body if fault.body is not None else default_fault_body(status)
        retry_after = fault.retry_after
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        return web.json_response(body, status=status, headers=headers)

    def call_record(
        self, request: web.Request, response: web.StreamResponse | None, call: RecordedCall
    ) -> CallRecord:
        """The call and the app it was made for (known from a route, else from its token); an
        access token in the query string (the oapi host's calls) is masked."""
        client_id = request.get(APP_KEY, "")
        if not client_id:
            token = request.headers.get(TOKEN_HEADER, "")
            client_id = (self.state.app_for_token(token) or "") if token else ""
        if "access_token" in call.query:
            call = dataclasses.replace(call, query={**call.query, "access_token": "***"})
        return call.extended(CallRecord, client_id=client_id)

    def describe(self) -> list[str]:
        """The URL and the app credentials to use."""
        url = self.url
        lines = [
            f"DingTalk emulator listening on {url}",
            f"  DINGTALK_OPENAPI_ENDPOINT={url}  (api_base for channeld)",
            f"  oapi_base={url}  (member details, profile access: {self.state.profile_access})",
        ]
        # These are the emulator's own throwaway credentials, printed so a user can copy them.
        lines += [
            f"  app client_id={app.client_id} client_secret={app.client_secret} "
            f"robot_code={app.effective_robot_code}"
            for app in self.state.apps.values()
        ]
        lines.append(f"  card templates: {', '.join(self.state.templates)}")
        return lines

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
        if sender_staff_id not in self.state.users:
            self.add_user(EmulatedUser.default(sender_staff_id, sender_nick))
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

    def add_user(self, user: EmulatedUser) -> None:
        """A member the contacts API knows (replacing one with the same staff id); whoever sends
        a message is added with made-up details unless added before."""
        self.state.users[user.staff_id] = user
        self.state.notify()

    def set_profile_access(self, access: str) -> None:
        """What the contacts API lets apps read: "full", "basic" (no e-mail, no mobile) or
        "none" (the permission-denied answer)."""
        if access not in PROFILE_ACCESS:
            raise ValueError(f"profile access must be one of {', '.join(PROFILE_ACCESS)}")
        self.state.profile_access = access
        self.state.notify()

    # -- faults ----------------------------------------------------------------------------------

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
        fault = Fault(
            path=path_pattern,
            status=status,
            remaining=times,
            body=body,
            retry_after=retry_after,
            delay=latency,
            method=method,
        )
        self.state.faults.append(fault)
        return fault

    def fail_deliveries(self, times: int = 1, error_msg: str = "robot is not in the group") -> None:
        """The next card deliveries report `success: false` inside an HTTP 200."""
        self.state.failing_deliveries.extend([error_msg] * times)

    def expire_sessions(self) -> int:
        """Every sessionWebhook handed out so far stops working."""
        for session in self.state.sessions.values():
            session.revoked = True
        return len(self.state.sessions)

    # -- observations ----------------------------------------------------------------------------

    def sent_frames(self, topic: str | None = None) -> list[SentFrame]:
        """Frames pushed so far, pings and disconnects included."""
        return [f for f in self.gateway.sent.values() if topic is None or f.topic == topic]

    def acks(self, message_id: str | None = None) -> list[AckRecord]:
        """Frames the clients sent back, in arrival order."""
        return [a for a in self.state.acks if message_id is None or a.message_id == message_id]
