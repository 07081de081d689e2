"""What the Easemob emulator knows and remembers beyond the state every emulator keeps: the app and
its bot users, registered users, messages with their rewrites, chats as clients show them, token
requests, and Easemob's error and fault shapes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from channels.emulator import http
from channels.emulator.state import CardStatus, EmulatorStateBase, RecordedCall, Transcript
from channels.emulator.state import Fault as FaultBase

MAX_EDITS = 10  # rewrites one message takes (EditLimitExceededException after)
SNOWFLAKE_EPOCH_MS = 1_400_000_000_000  # message ids are 19-digit decimals, time-ordered


@dataclass(frozen=True, slots=True)
class Bot:
    """A user the emulator treats as a bot: the control plane's `bot_user`."""

    bot_user: str


BotSpec = Bot | str


class ApiError(http.ApiError[str]):
    """An Easemob REST error: `{"error", "exception", "timestamp", "duration",
    "error_description"}`, plus `error_code` where Easemob numbers it."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        *,
        exception: str = "",
        error_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, error, description, headers)
        self.exception = exception
        self.error_code = error_code

    def body(self) -> dict[str, Any]:
        """The JSON body Easemob sends with this error."""
        body: dict[str, Any] = {"error": self.code}
        if self.exception:
            body["exception"] = self.exception
        body |= {"timestamp": now_ms(), "duration": 0}
        if self.error_code is not None:
            body["error_code"] = self.error_code
        body["error_description"] = self.message
        return body


def now_ms() -> int:
    """Wall-clock milliseconds, as every Easemob timestamp."""
    return int(time.time() * 1000)


def unauthorized(description: str, error: str = "unauthorized") -> ApiError:
    """A refused app token (401)."""
    return ApiError(401, error, description, exception="EasemobSecurityException")


def reach_limit() -> ApiError:
    """An API's calls-per-second limit exceeded (429)."""
    return ApiError(429, "reach_limit", "This request has reached api limit")


def illegal_argument(description: str) -> ApiError:
    """A request field Easemob refuses (400)."""
    return ApiError(
        400, "illegal_argument", description, exception="java.lang.IllegalArgumentException"
    )


def rewrite_error(status: int, exception: str, description: str) -> ApiError:
    """A refused rewrite, with the exception type the rewrite API names."""
    return ApiError(status, "message_rewrite_error", description, exception=exception)


@dataclass(kw_only=True)
class Fault(FaultBase):
    """An injected REST fault: a status with Easemob's error body (and Retry-After), a delay, or
    both."""

    error: str = ""
    description: str = ""
    retry_after: float | None = None


class MessageIds:
    """Message ids as Easemob shows them: decimal strings, larger for later messages."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        """A new id."""
        value = max((now_ms() - SNOWFLAKE_EPOCH_MS) << 22, self._last + 1)
        self._last = value
        return str(value)


@dataclass
class Message:
    """One message the server took: a user's (from a client SDK) or the bot's (from REST)."""

    msg_id: str
    sender: str
    to: str  # the receiving user, or the group id
    chat_id: str
    chat_type: str  # "chat" or "groupchat"
    body: dict[str, Any]  # the flat message body: {"type": "txt", "msg": ...}
    ext: dict[str, Any]
    timestamp: int  # ms, when the server took it
    edits: int = 0

    @property
    def text(self) -> str:
        """The text of a text message, else a short description of the body."""
        if self.body.get("type") == "txt":
            return str(self.body.get("msg", ""))
        return f"[{self.body.get('type', 'unknown')}]"


@dataclass
class ChatItem:
    """One entry of a chat transcript: a user's message or a bot message."""

    id: str  # the msg_id
    kind: str  # "user", "message" (final as sent), "card" (rewritable, grows until settled)
    at: float  # time.monotonic()
    sender: str
    text: str
    blocked: str = ""  # a user's message the pre-send callback refused: the code it gave


@dataclass
class Chat(Transcript):
    """A conversation as its members see it: a pair of users, or a group."""

    chat_id: str
    chat_type: str  # "chat" or "groupchat"
    members: list[str]

    def key(self) -> str:
        """The chat id."""
        return self.chat_id


def pair_chat_id(a: str, b: str) -> str:
    """The id of the one-to-one chat of two users, the same from either side."""
    first, second = sorted((a, b))
    return f"{first}|{second}"


@dataclass
class BotCard(CardStatus):
    """A bot message sent while rewriting is enabled: its text as of the latest rewrite, and
    settled once no rewrite came for a while (Easemob has no end-of-stream marker)."""

    msg_id: str
    chat_id: str
    sender: str
    text: str
    edits: int = 0
    settled: bool = False
    texts: list[str] = field(default_factory=list)  # every text it showed, oldest first

    @property
    def status(self) -> str:
        """`streaming` until settled (or at the edit cap), then `finished`."""
        return "finished" if self.settled or self.edits >= MAX_EDITS else "streaming"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary for the control plane."""
        return {
            "msg_id": self.msg_id,
            "chat_id": self.chat_id,
            "sender": self.sender,
            "text": self.text,
            "edits": self.edits,
            "status": self.status,
            "done": self.done,
            "texts": list(self.texts),
        }


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One POST to `/token` and what it got (the secret is never kept)."""

    seq: int
    at: float  # time.monotonic()
    client_id: str
    granted: bool
    expires_in: int  # 0 when refused
    error: str


class EmulatorState(EmulatorStateBase[Fault, RecordedCall, BotCard]):
    """All mutable state; `notify()` wakes everyone waiting for a change."""

    def __init__(self, bots: list[Bot], users: list[str]) -> None:
        super().__init__()
        self.apps: dict[str, Bot] = {bot.bot_user: bot for bot in bots}
        self.chats: dict[str, Chat] = {}
        self.users: dict[str, dict[str, Any]] = {}  # username -> its entity
        self.messages: dict[str, Message] = {}
        self.token_requests: list[TokenRequest] = []
        self.issued: set[str] = set()  # every token ever granted: an expired one says so
        self.ids = MessageIds()
        for name in users:
            self.add_user(name)

    def add_user(self, username: str) -> dict[str, Any]:
        """Registers a user (as the console or `/users` does); returns its entity."""
        stamp = now_ms()
        entity = {
            "uuid": f"{stamp:x}-{len(self.users):04x}-emulated-user",
            "type": "user",
            "created": stamp,
            "modified": stamp,
            "username": username,
            "activated": True,
        }
        self.users[username] = entity
        self.changed()
        return entity

    def chat(self, chat_id: str, chat_type: str, members: list[str]) -> Chat:
        """Gets or creates a chat."""
        chat = self.chats.get(chat_id)
        if chat is None:
            chat = self.chats[chat_id] = Chat(chat_id, chat_type, members)
        return chat

    def item_view(self, item: ChatItem) -> dict[str, Any]:
        """What members see of an item; a rewritable bot message as it is now."""
        entry: dict[str, Any] = {
            "id": item.id,
            "kind": item.kind,
            "at": item.at,
            "sender": item.sender,
            "text": item.text,
        }
        if item.blocked:
            entry["blocked"] = item.blocked
        card = self.cards.get(item.id) if item.kind == "card" else None
        if card is not None:
            entry.update(text=card.text, status=card.status, done=card.done, edits=card.edits)
        return entry
