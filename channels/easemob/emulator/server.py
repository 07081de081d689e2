"""`EasemobEmulator`: a local Easemob app (REST API + callback sender + control plane) on one
port."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from channels.easemob.emulator.api import Api
from channels.easemob.emulator.callbacks import CallbackSender, PostAttempt, PresendCall
from channels.easemob.emulator.control import Control
from channels.easemob.emulator.messaging import Messaging
from channels.easemob.emulator.state import (
    ApiError,
    Bot,
    BotCard,
    BotSpec,
    ChatItem,
    EmulatorState,
    Fault,
    TokenRequest,
    reach_limit,
    unauthorized,
)
from channels.emulator.gateway import GatewayBase, SocketInfo, no_gateway
from channels.emulator.server import EmulatorServer
from channels.emulator.state import Delivered, RecordedCall

DEFAULT_BOTS: tuple[BotSpec, ...] = ("aibot",)
DEFAULT_CALLBACK = "http://127.0.0.1:8789/hooks/em-main"
DEFAULT_ORG = "org"
DEFAULT_APP = "app"
DEFAULT_CLIENT_ID = "YXA6emulator-client-id"
DEFAULT_CLIENT_SECRET = "YXA6emulator-client-secret"  # noqa: S105 - the emulator's own, printed
DEFAULT_CALLBACK_SECRET = "emulator-callback-secret"  # noqa: S105 - likewise
DEFAULT_TOKEN_TTL = 60 * 24 * 3600  # the server's default: 60 days
SHAPES = ("flat", "bodies")
CALLBACKS = ("pre", "post", "both")


@dataclass(frozen=True, slots=True)
class UserMessage(Delivered):
    """What `send_user_message` did: the ids, and what the callbacks got."""

    chat_id: str
    item_id: str  # the chat item: the msg_id
    msg_id: str
    verdict: str  # the pre-send verdict ("pass", "block"), "" without a pre-send callback
    presend_in_time: bool | None  # None without a pre-send callback
    presend_after: float | None  # seconds until the pre-send answer (None: none in time)
    postsend_ok: bool | None  # the post-send callback was taken; None when none was sent


class EasemobEmulator(EmulatorServer[Fault, RecordedCall, BotCard, SocketInfo]):
    """A local Easemob app for our provider, `channeld chat` and end-to-end tests.

    Its `url` is the `api_base` for clients, and the control plane. User messages go to
    `callback` (the callback rules' URL) as pre-send and/or post-send callbacks; "" sends none.
    """

    secret_fields = frozenset({"client_secret"})  # /token bodies (passwords live in lists)

    def __init__(
        self,
        bots: Iterable[BotSpec] = DEFAULT_BOTS,
        *,
        org: str = DEFAULT_ORG,
        app: str = DEFAULT_APP,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        callback: str = DEFAULT_CALLBACK,
        callback_secret: str = DEFAULT_CALLBACK_SECRET,
        rewrite: bool = False,
        token_ttl: int = DEFAULT_TOKEN_TTL,
        presend_wait: float = 0.2,
        presend_default_pass: bool = True,
        callback_timeout: float = 10.0,
        callbacks: str = "both",
        shape: str | None = None,
        rate_limit: int = 100,
        max_body_bytes: int = 5000,
        settle: float = 3.0,
        echo: bool = True,
        users: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.state: EmulatorState = EmulatorState(
            [b if isinstance(b, Bot) else Bot(b) for b in bots], list(users)
        )
        # Easemob has no socket the bot holds
        self.gateway: GatewayBase[Any, Any] = no_gateway(self.state)
        self.callbacks = _choice("callbacks", callbacks, CALLBACKS)
        self.shape = None if shape is None else _choice("shape", shape, SHAPES)
        self.sender = CallbackSender(
            callback,
            callback_secret,
            f"{org}#{app}",
            wait=presend_wait,
            default_pass=presend_default_pass,
            timeout=callback_timeout,
            changed=self.state.changed,
        )
        self.messaging = Messaging(
            self.state, self.sender, rewrite=rewrite, settle=settle, echo=echo
        )
        self.api = Api(
            self.state,
            self.messaging,
            org=org,
            app=app,
            client_id=client_id,
            client_secret=client_secret,
            token_ttl=token_ttl,
            rate_limit=rate_limit,
            max_body_bytes=max_body_bytes,
        )

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Binds, serves and opens the callback sender; returns the base URL."""
        url = await super().start(host, port)
        self.sender.start()
        return url

    async def stop(self) -> None:
        """Stops callbacks in flight and closes the server."""
        self.messaging.stop()
        await self.sender.stop()
        await super().stop()

    def add_routes(self, app: web.Application) -> None:
        """The REST API and the control plane."""
        self.api.add_routes(app)
        Control(self).add_routes(app)

    def fault_response(self, request: web.Request, fault: Fault) -> web.Response:
        """Easemob's error body for the status (429 and 401 as the real ones)."""
        status = fault.status or 500
        if fault.error or fault.description:
            error = ApiError(status, fault.error or "injected_fault", fault.description)
        elif status == 429:
            error = reach_limit()
        elif status == 401:
            error = unauthorized("Unable to authenticate due to expired access token")
        else:
            error = ApiError(status, "internal_server_error", "injected fault")
        response = error.response()
        if fault.retry_after is not None:
            response.headers["Retry-After"] = f"{fault.retry_after:g}"
        return response

    def call_record(
        self, request: web.Request, response: web.StreamResponse | None, call: RecordedCall
    ) -> RecordedCall:
        """The call as recorded; user passwords (in `/users` lists) are masked too."""
        if not isinstance(call.body, list):
            return call
        masked = [
            {k: "***" if k == "password" else v for k, v in user.items()}
            if isinstance(user, dict)
            else user
            for user in call.body
        ]
        return dataclasses.replace(call, body=masked)

    def describe(self) -> list[str]:
        """The URL, the app, where callbacks go and a channel snippet for channeld.toml."""
        api, bots = self.api, list(self.state.apps)
        target = self.sender.url or "(none: no callbacks are sent)"
        # The emulator's own throwaway credentials, printed so a user can copy them.
        return [
            f"Easemob emulator listening on {self.url} (app key {api.appkey})",
            f"  bot users: {', '.join(bots)}",
            f"  callbacks: {target} ({self.callbacks}; pre-send wait "
            f"{self.sender.wait * 1000:g} ms)",
            f"  message rewriting: {'enabled' if self.messaging.rewrite_enabled else 'off'}",
            "  channel for channeld.toml:",
            "    [[channels]]",
            '    id = "em-main"',
            '    type = "easemob"',
            f'    api_base = "{self.url}"',
            f'    org_name = "{api.org}"',
            f'    app_name = "{api.app}"',
            f'    client_id = "{api.client_id}"',
            f'    client_secret = "{api.client_secret}"',
            f'    callback_secret = "{self.sender.secret}"',
            f'    bot_user = "{bots[0] if bots else "aibot"}"',
            f'    stream = "{"edit" if self.messaging.rewrite_enabled else "off"}"',
        ]

    # -- users -----------------------------------------------------------------------------------

    async def send_user_message(
        self,
        bot_user: str,
        *,
        from_user: str = "user1",
        text: str = "",
        message_id: str | None = None,
        callbacks: str | None = None,
        shape: str | None = None,
        to_user: str | None = None,
        group_id: str | None = None,
        body: dict[str, Any] | None = None,
        secret: str | None = None,
        skew_seconds: float = 0.0,
    ) -> UserMessage:
        """A user's client sends a message to the bot (or to `to_user`, or in group `group_id`):
        the pre-send callback asks for a verdict, then the post-send callback follows (as
        `callbacks` says; default the emulator's). `body` replaces the text body (e.g. an
        image); `secret` and `skew_seconds` sign wrongly on purpose. With `message_id`, the
        stored message's callbacks are sent again (a redelivery)."""
        if bot_user not in self.state.apps:
            raise KeyError(bot_user)
        which = _choice("callbacks", callbacks or self.callbacks, CALLBACKS)
        chosen = shape or self.shape
        signing = self.sender.signing(secret, skew_seconds)
        item: ChatItem | None = None
        if message_id is not None:
            message = self.state.messages[message_id]
        else:
            content = dict(body) if body is not None else {"msg": text, "type": "txt"}
            target = group_id or to_user or bot_user
            message = self.messaging.user_message(
                from_user, target, content, group=group_id is not None
            )
            # shown before any callback, so that no answer can come before it in the chat
            item = self.messaging.show_user_message(message)
        presend: PresendCall | None = None
        blocked = ""
        if self.sender.url and which in ("pre", "both"):
            flat = _choice("shape", chosen or "flat", SHAPES) == "flat"
            presend = await self.sender.presend(message, flat=flat, signing=signing)
            blocked = presend.code if presend.verdict == "block" else ""
        if blocked and item is not None:
            self.messaging.block(item, message, blocked)
        posted: bool | None = None
        if self.sender.url and which in ("post", "both") and not blocked:
            flat = _choice("shape", chosen or "bodies", SHAPES) == "flat"
            posted = await self.sender.postsend(message, flat=flat, signing=signing)
        taken = bool(presend and presend.in_time and presend.status == 200) or bool(posted)
        reason = ""
        if not self.sender.url:
            reason = "no callback URL: nothing is sent"
        elif blocked:
            reason = f"blocked by the pre-send callback: {blocked}"
        elif not taken:
            reason = "the callback receiver took no callback"
        return UserMessage(
            taken and not blocked,
            reason,
            message.chat_id,
            message.msg_id,
            message.msg_id,
            presend.verdict if presend else "",
            None if presend is None else presend.in_time,
            presend.answered_after if presend and presend.in_time else None,
            posted,
        )

    # -- faults and settings ---------------------------------------------------------------------

    def add_fault(
        self,
        path_pattern: str,
        status: int | None = None,
        *,
        times: int | None = 1,
        error: str = "",
        description: str = "",
        retry_after: float | None = None,
        delay: float = 0.0,
        method: str | None = None,
    ) -> Fault:
        """Answers the next `times` matching REST calls with `status` (None: only delays them)."""
        fault = Fault(
            path=path_pattern,
            status=status,
            remaining=times,
            error=error,
            description=description,
            retry_after=retry_after,
            delay=delay,
            method=method,
        )
        self.state.faults.append(fault)
        return fault

    def set_callback(
        self, url: str | None = None, secret: str | None = None, wait: float | None = None
    ) -> None:
        """Changes the callback rule: its URL ("" sends nothing), secret or pre-send wait."""
        if url is not None:
            self.sender.url = url
        if secret is not None:
            self.sender.secret = secret
        if wait is not None:
            self.sender.wait = wait
        self.state.changed()

    def set_rewrite(self, enabled: bool) -> None:
        """Enables or disables the rewrite feature (as Easemob's sales would)."""
        self.messaging.rewrite_enabled = enabled
        self.state.changed()

    def settle(self) -> None:
        """Marks every rewritable bot message final now."""
        self.messaging.settle_all()

    # -- observations ----------------------------------------------------------------------------

    def presends(self, msg_id: str | None = None) -> list[PresendCall]:
        """Every pre-send callback (optionally of one message), oldest first."""
        return [dataclasses.replace(p) for p in self.sender.presends if msg_id in (None, p.msg_id)]

    def postsends(self, msg_id: str | None = None) -> list[PostAttempt]:
        """Every post-send POST, edit events included (optionally of one message)."""
        return [a for a in self.sender.attempts if msg_id in (None, a.msg_id)]

    def acks(self, msg_id: str | None = None) -> list[PostAttempt]:
        """The receiver's answers to post-send callbacks: see `postsends`."""
        return self.postsends(msg_id)

    def token_requests(self) -> list[TokenRequest]:
        """Every `/token` request, oldest first."""
        return list(self.state.token_requests)

    def users(self) -> list[str]:
        """Registered user names."""
        return list(self.state.users)

    def message(self, msg_id: str) -> dict[str, Any] | None:
        """A stored message as it is now (after rewrites)."""
        message = self.state.messages.get(msg_id)
        if message is None:
            return None
        return {
            "msg_id": message.msg_id,
            "from": message.sender,
            "to": message.to,
            "chat_id": message.chat_id,
            "chat_type": message.chat_type,
            "body": dict(message.body),
            "ext": dict(message.ext),
            "timestamp": message.timestamp,
            "edits": message.edits,
        }


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value
