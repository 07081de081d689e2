"""The callback sender: the pre-send callback (a verdict awaited for the rule's wait time, then the
rule's default policy; never retried) and the post-send callback (one immediate retry, then
dropped), signed `security = md5(callId + secret + timestamp)` as Easemob signs them.

A pre-send answer that comes late is still read, so how long it took is known; the verdict was
the default policy's by then, as on the real server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from channels.easemob.emulator.state import Message, now_ms
from channels.emulator.outbound import Answer, Outbound

MAX_ANSWER_CHARS = 1000  # a longer answer is taken for an attack: the callback failed
SECURITY_VERSION = "1.0.0"
CONTENT_TYPES = {
    "txt": "text",
    "img": "image",
    "audio": "voice",
    "loc": "location",
    "video": "video",
    "file": "file",
    "cmd": "command",
    "custom": "custom",
}


def security(call_id: str, secret: str, timestamp: int) -> str:
    """`MD5(callId + Secret + timestamp)` as 32 lower-case hex digits."""
    text = f"{call_id}{secret}{timestamp}"
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Signing:
    """How one message's callbacks are signed: the rule's secret (or a wrong one, to test the
    receiver) and a clock skew added to `timestamp`."""

    secret: str
    skew_ms: int = 0


@dataclass
class PresendCall:
    """One pre-send callback: when it went, what came back, how long it took, the verdict."""

    seq: int
    msg_id: str
    call_id: str
    sent_at: float  # time.monotonic()
    wait: float  # the rule's wait time, seconds
    body: dict[str, Any]
    verdict: str = ""  # "pass" or "block" once decided
    by_default: bool = False  # the rule's default policy decided (no usable answer in time)
    code: str = ""  # a block's `code`
    in_time: bool = False  # an answer came within the wait time
    answered_after: float | None = None  # seconds until the answer was read (late ones too)
    status: int | None = None
    answer: Any = None  # the JSON answer (its text when not JSON)
    error: str = ""  # why there was no HTTP answer


@dataclass(frozen=True, slots=True)
class PostAttempt:
    """One POST of a post-send callback (an edit event is one too) and the receiver's answer."""

    seq: int
    at: float  # time.monotonic() when sent
    msg_id: str
    call_id: str
    event: str  # "chat" (a message) or "edit" (a rewrite)
    attempt: int  # 1, or 2 for the immediate retry
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    error: str
    body: dict[str, Any] = field(repr=False)

    @property
    def ok(self) -> bool:
        """The receiver took it (HTTP 200; the body is not read)."""
        return self.status == 200


def message_payload(message: Message, flat: bool) -> dict[str, Any]:
    """The `payload` of a callback: flat `{"msg", "type"}` or `{"ext", "bodies": [...]}`."""
    if flat:
        return dict(message.body)
    return {"ext": dict(message.ext), "bodies": [dict(message.body)]}


class CallbackSender(Outbound):
    """Posts an app's callbacks to the rule's URL and records every attempt."""

    def __init__(
        self,
        url: str,
        secret: str,
        appkey: str,
        *,
        wait: float,
        default_pass: bool,
        timeout: float,
        changed: Callable[[], None],
    ) -> None:
        super().__init__(timeout=timeout)
        self.url = url
        self.secret = secret
        self.appkey = appkey
        self.wait = wait
        self.default_pass = default_pass
        self.presends: list[PresendCall] = []
        self.attempts: list[PostAttempt] = []
        self._changed = changed
        self._echoes: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()

    def start(self) -> None:
        """Opens the HTTP client on the running loop, and starts sending echoes."""
        super().start()
        self.spawn(self._send_echoes(), name="easemob-echoes")

    def signing(self, secret: str | None = None, skew_seconds: float = 0.0) -> Signing:
        """The rule's signing, or a deliberately wrong secret or clock."""
        return Signing(self.secret if secret is None else secret, round(skew_seconds * 1000))

    def echo(self, send: Callable[[], Awaitable[Any]]) -> None:
        """Queues a callback of the bot's own doing: sent in order, in the background (it must
        not hold up the REST answer that caused it)."""
        self._echoes.put_nowait(send)

    async def _send_echoes(self) -> None:
        while True:
            send = await self._echoes.get()
            await send()

    # -- pre-send --------------------------------------------------------------------------------

    async def presend(self, message: Message, *, flat: bool, signing: Signing) -> PresendCall:
        """Asks the receiver for a verdict on a user's message; returns once it is decided."""
        call_id = f"{self.appkey}_{uuid.uuid4()}"
        timestamp = message.timestamp + signing.skew_ms
        body: dict[str, Any] = {"callId": call_id, "timestamp": timestamp}
        body |= self._routing(message)
        body["payload"] = message_payload(message, flat)
        body["security"] = security(call_id, signing.secret, timestamp)
        call = PresendCall(
            len(self.presends) + 1, message.msg_id, call_id, time.monotonic(), self.wait, body
        )
        self.presends.append(call)
        task = self.spawn(self._post(body))
        done, _ = await asyncio.wait({task}, timeout=self.wait)
        if task in done:
            call.in_time = True
            self._answered(call, task.result())
        else:
            task.add_done_callback(lambda t: self._late(call, t))
        self._decide(call)
        self._changed()
        return call

    def _late(self, call: PresendCall, task: asyncio.Task[Answer]) -> None:
        if not task.cancelled():
            self._answered(call, task.result())
            self._changed()

    def _answered(self, call: PresendCall, reply: Answer) -> None:
        call.answered_after = reply.elapsed
        call.status = reply.status
        call.error = reply.error
        try:
            call.answer = json.loads(reply.text)
        except ValueError:
            call.answer = reply.text

    def _decide(self, call: PresendCall) -> None:
        answer = call.answer
        usable = (
            call.in_time
            and call.status == 200
            and isinstance(answer, dict)
            and isinstance(answer.get("valid"), bool)
            and len(json.dumps(answer, ensure_ascii=False)) <= MAX_ANSWER_CHARS
        )
        if isinstance(answer, dict) and usable:
            call.verdict = "pass" if answer["valid"] else "block"
            if not answer["valid"]:
                code = answer.get("code")
                call.code = "custom logic denied" if code is None else str(code)
            return
        call.by_default = True
        call.verdict = "pass" if self.default_pass else "block"
        if call.verdict == "block":
            call.code = "custom internal error"

    # -- post-send -------------------------------------------------------------------------------

    async def postsend(self, message: Message, *, flat: bool, signing: Signing) -> bool:
        """The post-send callback of a message (one immediate retry); True when it was taken."""
        call_id = f"{self.appkey}_{message.msg_id}"
        timestamp = message.timestamp + signing.skew_ms
        body: dict[str, Any] = {"callId": call_id, "eventType": "chat", "timestamp": timestamp}
        body |= self._routing(message)
        body["payload"] = message_payload(message, flat)
        body |= {
            "securityVersion": SECURITY_VERSION,
            "security": security(call_id, signing.secret, timestamp),
            "appkey": self.appkey,
            "host": "emulator",
            "content_type": self._content_type(message),
        }
        return await self._deliver(message.msg_id, call_id, "chat", body)

    async def edited(self, message: Message, event_id: str, operator: str, edit_time: int) -> bool:
        """The post-send edit event of a rewrite (`event_id`: the event's own message id); one
        immediate retry."""
        call_id = f"{self.appkey}_{event_id}"
        timestamp = now_ms()
        body: dict[str, Any] = {
            "callId": call_id,
            "timestamp": timestamp,
            "appkey": self.appkey,
            "from": message.sender,
            "to": message.to,
            "msg_id": event_id,
            "chat_type": "edit",
            "payload": {
                "bodies": [dict(message.body)],
                "edit_message_id": message.msg_id,
                "from": message.sender,
                "meta": {
                    "edit_msg": {
                        "count": message.edits,
                        "edit_time": edit_time,
                        "operator": operator,
                        "send_time": message.timestamp,
                        "sender": message.sender,
                    }
                },
                "to": message.to,
                "type": "edit",
            },
            "securityVersion": SECURITY_VERSION,
            "security": security(call_id, self.secret, timestamp),
        }
        return await self._deliver(message.msg_id, call_id, "edit", body)

    async def _deliver(self, msg_id: str, call_id: str, event: str, body: dict[str, Any]) -> bool:
        for attempt in (1, 2):
            at = time.monotonic()
            reply = await self._post(body)
            record = PostAttempt(
                len(self.attempts) + 1,
                at,
                msg_id,
                call_id,
                event,
                attempt,
                reply.status,
                reply.error,
                body,
            )
            self.attempts.append(record)
            self._changed()
            if record.ok:
                return True
        return False

    # -- plumbing --------------------------------------------------------------------------------

    @staticmethod
    def _routing(message: Message) -> dict[str, Any]:
        fields: dict[str, Any] = {"chat_type": message.chat_type}
        if message.chat_type == "groupchat":
            fields["group_id"] = message.to
        return fields | {"from": message.sender, "to": message.to, "msg_id": message.msg_id}

    @staticmethod
    def _content_type(message: Message) -> str:
        where = "group" if message.chat_type == "groupchat" else "user"
        kind = str(message.body.get("type", "unknown"))
        return f"chat:{where}:{CONTENT_TYPES.get(kind, 'unknown')}"

    async def _post(self, body: dict[str, Any]) -> Answer:
        return await self.post(self.url, json.dumps(body, ensure_ascii=False).encode())
