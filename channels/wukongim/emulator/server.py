"""`WuKongIMEmulator`: a local WuKongIM (HTTP API + webhook pusher + control plane) on one port."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from channels.emulator.gateway import GatewayBase, SocketInfo, no_gateway
from channels.emulator.server import EmulatorServer
from channels.emulator.state import Delivered, RecordedCall
from channels.wukongim.emulator.api import Api, json_response, token_middleware
from channels.wukongim.emulator.control import Control
from channels.wukongim.emulator.messaging import EventRecord, Messaging
from channels.wukongim.emulator.payloads import go_json, text_payload
from channels.wukongim.emulator.state import (
    GROUP,
    PERSON,
    Bot,
    BotSpec,
    EmulatorState,
    Fault,
    StreamCard,
)
from channels.wukongim.emulator.streams import EventStore
from channels.wukongim.emulator.webhook import PushAttempt, WebhookPusher

DEFAULT_BOTS: tuple[BotSpec, ...] = ("aibot",)
DEFAULT_VERSION = "v2.2.5-20260422"
DEFAULT_WEBHOOK = "http://127.0.0.1:8789/hooks/wk-main"


@dataclass(frozen=True, slots=True)
class UserMessage(Delivered):
    """What `send_user_message` did: the ids that find the message in the chat and webhook."""

    chat_id: str
    item_id: str  # the chat item: its message_idstr
    message_id: str
    client_msg_no: str


class WuKongIMEmulator(EmulatorServer[Fault, RecordedCall, StreamCard, SocketInfo]):
    """A faithful local WuKongIM v2.2.5 for our provider, `channeld chat` and end-to-end tests.

    Its `url` is the `api_base` for clients, and the control plane. Messages go to `webhook`
    (the server's `webhook.httpAddr`); "" pushes nothing.
    """

    secret_fields = frozenset({"token"})  # /user/token bodies

    def __init__(
        self,
        bots: Iterable[BotSpec] = DEFAULT_BOTS,
        *,
        webhook: str = DEFAULT_WEBHOOK,
        token: str | None = None,
        version: str = DEFAULT_VERSION,
        push_interval: float = 0.5,
        count_per_push: int = 100,
        retry_max: int = 5,
        retry_pause: float = 1.0,
        webhook_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.state: EmulatorState = EmulatorState(
            [b if isinstance(b, Bot) else Bot(b) for b in bots]
        )
        # WuKongIM has no socket the bot must hold
        self.gateway: GatewayBase[Any, Any] = no_gateway(self.state)
        self.token = token
        self.streams = EventStore()
        self.webhook = WebhookPusher(
            webhook,
            interval=push_interval,
            count_per_push=count_per_push,
            retry_max=retry_max,
            retry_pause=retry_pause,
            timeout=webhook_timeout,
            changed=self.state.changed,
        )
        self.messaging = Messaging(self.state, self.streams, self.webhook)
        self.api = Api(
            self.state, self.messaging, self.streams, version=version, manager_token=token
        )

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Binds, serves and starts pushing to the webhook; returns the base URL."""
        url = await super().start(host, port)
        self.webhook.start()
        return url

    async def stop(self) -> None:
        """Stops pushing, ends outages and closes the server."""
        await self.webhook.stop()
        await super().stop()

    def add_routes(self, app: web.Application) -> None:
        """The token check, the HTTP API and the control plane."""
        app.middlewares.append(token_middleware(self.token))
        self.api.add_routes(app)
        Control(self).add_routes(app)

    def fault_response(self, request: web.Request, fault: Fault) -> web.Response:
        """401 with an empty body, 404 as gin writes it, else `{"msg","status"}`."""
        status = fault.status or 500
        if status == 401:
            return web.Response(status=401)
        if status == 404:
            return web.Response(status=404, text="404 page not found")
        response = json_response({"msg": fault.msg or "injected fault", "status": status}, status)
        if fault.retry_after is not None:
            response.headers["Retry-After"] = f"{fault.retry_after:g}"
        return response

    def call_record(
        self, request: web.Request, response: web.StreamResponse | None, call: RecordedCall
    ) -> RecordedCall:
        """The call as recorded (WuKongIM calls name no app)."""
        return call

    def describe(self) -> list[str]:
        """The URL, the bots, where messages go and a channel snippet for channeld.toml."""
        bots = list(self.state.apps)
        target = self.webhook.url or "(none: nothing is pushed)"
        lines = [
            f"WuKongIM emulator listening on {self.url} (version {self.api.version})",
            f"  bots: {', '.join(bots)}",
            f"  webhook: {target}",
            f"  manager token: {'required' if self.token else 'off'}",
            "  channel for channeld.toml:",
            "    [[channels]]",
            '    id = "wk-main"',
            '    type = "wukongim"',
            f'    api_base = "{self.url}"',
            f'    bot_uid = "{bots[0] if bots else "aibot"}"',
        ]
        if self.token:
            lines.append('    token = "${WUKONGIM_MANAGER_TOKEN}"')
        if "key=" in self.webhook.url:
            # the key the webhook URL carries (the channel must check the same one)
            lines.append('    webhook_key = "${WUKONGIM_WEBHOOK_KEY}"')
        return lines

    # -- users -----------------------------------------------------------------------------------

    async def send_user_message(
        self,
        bot_uid: str,
        *,
        from_uid: str = "user-1",
        text: str = "",
        group: bool = False,
        mention: bool = False,
        group_id: str | None = None,
        payload: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> UserMessage:
        """A user writes to the bot (a DM, or a group with `mention` @-ing the bot); the message
        is stored and queued for the webhook. With `message_id`, that stored message is queued
        again instead (a redelivery: the same message_id in a later batch)."""
        if bot_uid not in self.state.apps:
            raise KeyError(bot_uid)
        if message_id is not None:
            (message,) = self.messaging.redeliver([int(message_id)])
        else:
            if payload is None:
                raw = text_payload(text, [bot_uid] if group and mention else None)
            else:
                raw = go_json(payload)
            channel = (group_id or f"{from_uid}-group", GROUP) if group else (bot_uid, PERSON)
            message = self.messaging.send(from_uid, channel[0], channel[1], raw)
        reason = "" if self.webhook.enabled else "no webhook address: nothing is pushed"
        message_idstr = str(message.message_id)
        return UserMessage(
            not reason, reason, message.chat_id, message_idstr, message_idstr, message.client_msg_no
        )

    def redeliver(self, message_ids: Iterable[str | int]) -> list[str]:
        """Queues stored messages for the webhook again, together."""
        return [str(m.message_id) for m in self.messaging.redeliver([int(i) for i in message_ids])]

    # -- faults ----------------------------------------------------------------------------------

    def add_fault(
        self,
        path_pattern: str,
        status: int | None = None,
        *,
        times: int | None = 1,
        msg: str = "",
        retry_after: float | None = None,
        delay: float = 0.0,
        method: str | None = None,
    ) -> Fault:
        """Answers the next `times` matching calls with `status` (None: only delays them)."""
        fault = Fault(
            path=path_pattern,
            status=status,
            remaining=times,
            msg=msg,
            retry_after=retry_after,
            delay=delay,
            method=method,
        )
        self.state.faults.append(fault)
        return fault

    def downtime(self, seconds: float, status: int = 503) -> Fault:
        """Every API call answers `status` for `seconds` (a server restarting behind a proxy);
        the webhook pusher keeps its queue."""
        return self.temporary(
            self.add_fault("*", status, times=None, msg="server restarting"), seconds
        )

    def set_webhook(self, url: str) -> None:
        """Points the pusher at another address ("" stops queueing new messages)."""
        self.webhook.url = url
        self.state.changed()

    def pause_webhook(self, on: bool = True) -> None:
        """Holds every push while on (messages queue up); off pushes the queue at once."""
        self.webhook.pause(on)

    def flush_webhook(self) -> None:
        """Pushes the queue now rather than at the next tick."""
        self.webhook.flush()

    # -- observations ----------------------------------------------------------------------------

    def pushes(self, message_id: str | None = None) -> list[PushAttempt]:
        """Every webhook POST (optionally those carrying one message), oldest first."""
        return [a for a in self.webhook.attempts if message_id in (None, *a.message_ids)]

    def acks(self, message_id: str | None = None) -> list[PushAttempt]:
        """The receiver's answers are WuKongIM's acks: see `pushes`."""
        return self.pushes(message_id)

    def events(self, client_msg_no: str | None = None) -> list[EventRecord]:
        """Every accepted message event (optionally of one stream), oldest first."""
        records = self.messaging.records
        return [r for r in records if client_msg_no in (None, r.client_msg_no)]
