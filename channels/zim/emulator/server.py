"""`ZimEmulator`: a local ZEGO ZIM (server API, callback sender, control plane) on one port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from channels.emulator.gateway import GatewayBase, SocketInfo, no_gateway
from channels.emulator.server import EmulatorServer
from channels.emulator.state import Delivered, RecordedCall
from channels.zim.emulator.api import ACTION_KEY, FAULT_KEY, Api, action_fault_middleware
from channels.zim.emulator.callbacks import (
    BOT_MSG,
    EVENTS,
    SEND_MSG,
    CallbackAttempt,
    CallbackSender,
)
from channels.zim.emulator.control import Control
from channels.zim.emulator.state import (
    CallRecord,
    EmulatorState,
    Fault,
    PeerMessage,
    Refusal,
    Robot,
    RobotSpec,
)

DEFAULT_ROBOTS: tuple[RobotSpec, ...] = ("@RBT#assistant",)
DEFAULT_APP_ID = "1234567890"
DEFAULT_SECRET = "0123456789abcdef0123456789abcdef"  # noqa: S105 - the emulator's well-known one
DEFAULT_CALLBACK = "http://127.0.0.1:8789/hooks/zim-main"
CALLBACK_MODES = {SEND_MSG: (SEND_MSG,), BOT_MSG: (BOT_MSG,), "both": EVENTS}


@dataclass(frozen=True, slots=True)
class UserMessage(Delivered):
    """What `send_user_message` did: the ids that find the message in the chat and callbacks."""

    chat_id: str
    item_id: str  # the chat item: the msg_id
    message_id: str
    msg_seq: int


def go_query_escape(text: str) -> str:
    """URL-encoding as Go's url.QueryEscape does it (a space is `+`)."""
    return urllib.parse.quote_plus(text, safe="")


class ZimEmulator(EmulatorServer[Fault, CallRecord, PeerMessage, SocketInfo]):
    """A local ZIM app for our provider, `channeld chat` and end-to-end tests.

    Its `url` is the `api_base` for clients, and the control plane. User messages and echoes
    of the robot's sends and edits go to `callback` ("" sends nothing) as `callback_mode`
    says: `send_msg`, `bot_msg` or `both`. The callback secret is the ServerSecret unless set.
    """

    def __init__(
        self,
        robots: Iterable[RobotSpec] = DEFAULT_ROBOTS,
        *,
        app_id: str = DEFAULT_APP_ID,
        server_secret: str = DEFAULT_SECRET,
        callback_secret: str | None = None,
        callback: str = DEFAULT_CALLBACK,
        callback_mode: str = SEND_MSG,
        url_encode: bool = False,
        echo: bool = True,
        retry_scale: float = 1.0,
        callback_timeout: float = 5.0,
        qps: int = 20,
        max_message_bytes: int = 2000,
        edit_window: float = 24 * 3600.0,
        exists_form: str = "list",
        registered: bool = False,
        settle: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if callback_mode not in CALLBACK_MODES:
            raise ValueError(f"callback_mode must be one of {sorted(CALLBACK_MODES)}")
        specs = [r if isinstance(r, Robot) else Robot(r, registered) for r in robots]
        self.state: EmulatorState = EmulatorState(specs, clock, settle)
        # ZIM has no socket the robot holds
        self.gateway: GatewayBase[Any, Any] = no_gateway(self.state)
        self.app_id = app_id
        self.callback_mode = callback_mode
        self.url_encode = url_encode
        self.echo = echo
        self.callbacks = CallbackSender(
            callback,
            app_id=app_id,
            secret=server_secret if callback_secret is None else callback_secret,
            retry_scale=retry_scale,
            timeout=callback_timeout,
            changed=self.state.changed,
        )
        self.api = Api(
            self.state,
            app_id=app_id,
            server_secret=server_secret,
            qps=qps,
            max_message_bytes=max_message_bytes,
            edit_window=edit_window,
            exists_form=exists_form,
            robot_message=self._robot_message,
        )
        self._timers: list[asyncio.TimerHandle] = []

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Binds, serves and opens the callback sender; returns the base URL."""
        url = await super().start(host, port)
        self.callbacks.start()
        return url

    async def stop(self) -> None:
        """Drops pending retries, ends outages and closes the server."""
        for timer in self._timers:
            timer.cancel()
        await self.callbacks.stop()
        await super().stop()

    def add_routes(self, app: web.Application) -> None:
        """Faults by action, the server API and the control plane."""
        app.middlewares.append(action_fault_middleware(self.state, self.fault_response))
        self.api.add_routes(app)
        Control(self).add_routes(app)

    def fault_response(self, request: web.Request, fault: Fault) -> web.Response:
        """HTTP 200 with the fault's `code`, or its HTTP status with a ZIM-shaped body."""
        status = fault.status or 500
        code = fault.code if fault.code is not None else (0 if status == 200 else 1)
        body = {
            "Code": code,
            "Message": fault.message or "injected fault",
            "RequestId": self.state.request_id(),
        }
        return web.json_response(body, status=status)

    def call_record(
        self, request: web.Request, response: web.StreamResponse | None, call: RecordedCall
    ) -> CallRecord:
        """The call with its action and the `Code` it was answered with."""
        code: int | None = None
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            with contextlib.suppress(ValueError, AttributeError):
                code = json.loads(response.body).get("Code")
        if request.get(FAULT_KEY):
            call = replace(call, fault=True)
        return call.extended(CallRecord, action=request.get(ACTION_KEY, ""), code=code)

    def describe(self) -> list[str]:
        """The URL, the app, the robots, where callbacks go and a channel snippet."""
        robots = list(self.state.apps)
        target = self.callbacks.url or "(none: nothing is sent)"
        return [
            f"ZEGO ZIM emulator listening on {self.url}",
            f"  app id: {self.app_id}",
            f"  robots: {', '.join(robots)}",
            f"  callbacks: {target} ({self.callback_mode})",
            "  channel for channeld.toml:",
            "    [[channels]]",
            '    id = "zim-main"',
            '    type = "zim"',
            f"    app_id = {self.app_id}",
            '    server_secret = "${ZEGO_SERVER_SECRET}"',
            f'    api_base = "{self.url}"',
            f'    robot_id = "{robots[0] if robots else "@RBT#assistant"}"',
            f"  (ZEGO_SERVER_SECRET={self.api.server_secret})",
        ]

    # -- users -----------------------------------------------------------------------------------

    async def send_user_message(
        self,
        robot_id: str,
        *,
        from_user_id: str = "user-1",
        text: str = "",
        message_id: str | None = None,
        callback: str | None = None,
        msg_type: int = 1,
    ) -> UserMessage:
        """A user writes to the robot; the callbacks (`callback`: send_msg, bot_msg or both,
        else the emulator's mode) are sent and their first attempts awaited; retries follow in
        the background. With `message_id`, that stored message is called back again instead
        (a redelivery: new nonce and timestamp, same msg_id)."""
        if robot_id not in self.state.apps:
            raise KeyError(robot_id)
        events = CALLBACK_MODES[callback or self.callback_mode]
        if message_id is not None:
            message = self.state.messages[message_id]
        else:
            self.state.users.add(from_user_id)
            message = self.state.store(
                from_user_id,
                robot_id,
                text,
                msg_type=msg_type,
                source=0,
                msg_time=int(time.time() * 1000),
                robot_id=robot_id,
            )
        body = go_query_escape(message.text) if self.url_encode else message.text
        fields = {
            "from_user_id": message.sender,
            "conv_type": 0,
            "conv_id": robot_id,
            "msg_type": message.msg_type,
            "msg_body": body,
            "msg_id": message.msg_id,
            "msg_seq": message.msg_seq,
            "payload": "",
            "msg_time": message.msg_time,
            "send_result": 0,
            "sub_msg_type": 0,
            "user_list": [],
        }
        firsts = await asyncio.gather(*(self.callbacks.send(e, fields) for e in events))
        reasons = [
            f"{a.event} answered {a.status or a.error} (retrying)"
            for a in firsts
            if a is not None and not a.ok
        ]
        if not self.callbacks.url:
            reasons = ["no callback URL: nothing is sent"]
        return UserMessage(
            not reasons,
            "; ".join(reasons),
            message.chat_id,
            message.msg_id,
            message.msg_id,
            message.msg_seq,
        )

    def _robot_message(self, message: PeerMessage, why: str, batch: list[PeerMessage]) -> None:
        """After a send or an edit by the API: the echo callback, and waking chat readers when
        the message settles."""
        if message.chat_id:
            loop = asyncio.get_running_loop()
            self._timers = [t for t in self._timers if not t.cancelled()][-1000:]
            self._timers.append(
                loop.call_later(self.state.settle + 0.01, self.state.notify, message.chat_id)
            )
        if not self.echo or message is not batch[0]:
            return
        single = len(batch) == 1
        fields = {
            "from_user_id": message.sender,
            "conv_type": 0,
            "conv_id": "",  # a server-API one-to-one message names its receivers in user_list
            "msg_type": message.msg_type,
            "msg_body": message.text,
            "msg_id": message.msg_id if single else "",
            "msg_seq": message.msg_seq if single else 0,
            "source": 1,
            "payload": "",
            "msg_time": message.msg_time,
            "send_result": 0,
            "sub_msg_type": 0,
            "user_list": [
                {"UserId": m.receiver, "MsgId": m.msg_id, "MsgSeq": m.msg_seq} for m in batch
            ],
        }
        for event in CALLBACK_MODES[self.callback_mode]:
            self.callbacks.spawn(self.callbacks.send(event, fields))

    # -- faults ----------------------------------------------------------------------------------

    def add_fault(
        self,
        path_pattern: str = "/",
        status: int | None = None,
        *,
        action: str | None = None,
        code: int | None = None,
        message: str = "",
        times: int | None = 1,
        delay: float = 0.0,
        method: str | None = None,
    ) -> Fault:
        """Answers the next `times` matching calls (of `action`, when given) with `status`, or
        HTTP 200 with `code`; None for both only delays them."""
        if code is not None and status is None:
            status = 200
        fault = Fault(
            path=path_pattern,
            status=status,
            remaining=times,
            delay=delay,
            method=method,
            action=action,
            code=code,
            message=message,
        )
        self.state.faults.append(fault)
        return fault

    def downtime(self, seconds: float, status: int = 503) -> Fault:
        """Every API call answers `status` for `seconds`; callbacks go on."""
        return self.temporary(
            self.add_fault("*", status, times=None, message="server restarting"), seconds
        )

    def set_callback(self, url: str) -> None:
        """Points callbacks at another URL ("" sends none)."""
        self.callbacks.url = url
        self.state.changed()

    # -- observations ----------------------------------------------------------------------------

    def callback_attempts(
        self, msg_id: str | None = None, event: str | None = None
    ) -> list[CallbackAttempt]:
        """Every callback POST (of one message, of one event), oldest first."""
        return [
            a
            for a in self.callbacks.attempts
            if msg_id in (None, a.msg_id) and event in (None, a.event)
        ]

    def acks(self, message_id: str | None = None) -> list[CallbackAttempt]:
        """The app's server answers callbacks: see `callback_attempts`."""
        return self.callback_attempts(message_id)

    def refusals(self) -> list[Refusal]:
        """Every request refused for rate, oldest first."""
        return list(self.state.refusals)

    def robots(self) -> list[Robot]:
        """Copies of every robot, registered or not."""
        return [replace(r) for r in self.state.apps.values()]

    def message(self, msg_id: str) -> PeerMessage | None:
        """A copy of one stored message (any sender)."""
        message = self.state.messages.get(msg_id)
        if message is None:
            return None
        self.state.refresh(message)
        return replace(message, texts=list(message.texts))
