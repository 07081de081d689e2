"""What the Feishu emulator knows and remembers: apps, tokens, messages, cards, chats and calls.

Everything here is touched only from the emulator's own event loop; callers on other threads go
through `FeishuEmulatorThread`, which hands them copies.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from channels.emulator.state import EmulatorStateBase

APP_ID_KEY = web.RequestKey("feishu_app_id", str)  # the app a request turned out to be for
DISCOVERY_PATH = "/callback/ws/endpoint"


def stable_hex(*parts: str, length: int = 32) -> str:
    """A deterministic hex id, shaped like Feishu's opaque ids."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length]


@dataclass(frozen=True, slots=True)
class FeishuApp:
    """One custom (企业自建) app with its bot."""

    app_id: str
    app_secret: str
    bot_name: str = "Emulated Bot"
    tenant_key: str = ""

    @property
    def bot_open_id(self) -> str:
        """The bot's open_id, stable per app."""
        return "ou_bot_" + stable_hex("bot", self.app_id, length=24)

    @property
    def effective_tenant_key(self) -> str:
        """The tenant the app is installed in."""
        return self.tenant_key or stable_hex("tenant", self.app_id, length=16)


AppSpec = FeishuApp | tuple[str, str] | tuple[str, str, str]


def to_app(spec: AppSpec) -> FeishuApp:
    """Accepts a `FeishuApp` or an `(app_id, app_secret[, bot_name])` tuple."""
    if isinstance(spec, FeishuApp):
        return spec
    return FeishuApp(*spec)


class ApiError(Exception):
    """A Feishu OpenAPI error: HTTP status, business `code` and `msg`."""

    def __init__(
        self, status: int, code: int, msg: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {msg}")
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON body Feishu sends with an error."""
        return error_body(self.code, self.msg)


def error_body(code: int, msg: str) -> dict[str, Any]:
    """Feishu's error shape; `log_id` helps support tickets, so real answers carry one too."""
    return {
        "code": code,
        "msg": msg,
        "error": {
            "log_id": time.strftime("%Y%m%d%H%M%S") + stable_hex(msg, str(time.time()), length=20)
        },
    }


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One HTTP call the emulator answered; tokens and secrets are never kept."""

    seq: int
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    code: int | None  # the business code of the answer, None when it had none
    app_id: str  # "" when unknown
    fault: bool  # answered by an injected fault


@dataclass(frozen=True, slots=True)
class AckRecord:
    """One response frame a client sent for an event."""

    frame_message_id: str
    connection_id: str
    app_id: str
    at: float  # time.monotonic()
    code: int | None  # the `code` of the JSON payload
    latency: float | None  # seconds from the last part sent to this ack
    biz_rt: int | None  # the client's handler time header, ms
    seq_id: int
    log_id: int
    service: int
    matches: bool  # SeqID, LogID and service echo a part that was sent
    headers: dict[str, str]
    payload: Any


@dataclass(frozen=True, slots=True)
class CardOp:
    """One operation on a card entity, in arrival order."""

    at: float  # time.monotonic()
    op: str  # "create", "send", "content", "settings", "update"
    body: dict[str, Any]


@dataclass
class CardState:
    """A CardKit card entity as Feishu keeps it, plus its history."""

    card_id: str
    app_id: str
    card: dict[str, Any]  # the parsed card JSON 2.0
    elements: dict[str, dict[str, Any]]  # element_id -> the element (content updated in place)
    created_at: float
    streaming: bool
    streaming_enabled_at: float
    ever_streamed: bool
    sequence: int = 0
    closed_by_settings: bool = False
    timed_out: bool = False
    summary: str = ""
    message_id: str = ""  # the om_ id it was sent as, "" until sent
    chat_id: str = ""
    last_element: str = ""  # the element the latest content op wrote
    uuids: dict[str, str] = field(default_factory=dict)  # uuid -> body fingerprint
    history: list[CardOp] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The markdown the user reads: the last streamed element, else the first text one."""
        element = self.elements.get(self.last_element)
        if element is None:
            element = next((e for e in self.elements.values() if e.get("tag") in TEXT_TAGS), None)
        return str(element.get("content", "")) if element is not None else ""

    @property
    def status(self) -> str:
        """`created`, `streaming`, `finished` (closed by settings) or `failed` (timed out)."""
        if self.closed_by_settings or not self.ever_streamed:
            return "finished"
        if self.timed_out:
            return "failed"
        if any(op.op == "content" for op in self.history):
            return "streaming"
        return "created"

    @property
    def done(self) -> bool:
        """No more changes are expected."""
        return self.status in ("finished", "failed")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary for the control plane."""
        return {
            "card_id": self.card_id,
            "app_id": self.app_id,
            "message_id": self.message_id,
            "chat_id": self.chat_id,
            "text": self.text,
            "status": self.status,
            "done": self.done,
            "streaming": self.streaming,
            "sequence": self.sequence,
            "summary": self.summary,
            "elements": {k: dict(v) for k, v in self.elements.items()},
            "ops": [op.op for op in self.history],
        }


TEXT_TAGS = ("markdown", "plain_text")


@dataclass
class ChatItem:
    """One entry of a chat transcript: a user message, a bot message or a card."""

    id: str  # the om_ message id
    kind: str  # "user", "message", "card"
    at: float  # time.monotonic()
    msg_type: str
    text: str
    sender: str
    reply_to: str = ""
    card_id: str = ""
    content: str = ""  # the raw content JSON string
    uuid: str = ""


@dataclass
class Chat:
    """A chat as its members see it."""

    chat_id: str
    app_id: str
    chat_type: str  # "p2p" or "group"
    name: str = ""
    items: list[ChatItem] = field(default_factory=list)
    version: int = 0
    sends: deque[float] = field(default_factory=deque)  # monotonic times of bot sends


@dataclass
class Fault:
    """An injected HTTP fault: a status or business-code answer, extra delay, or both."""

    path: str  # exact path or fnmatch pattern, e.g. "/open-apis/cardkit/*"
    status: int | None
    code: int | None
    msg: str
    remaining: int | None  # None: forever
    method: str | None = None
    delay: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Method (if given) and path pattern both match."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return path == self.path or fnmatch.fnmatchcase(path, self.path)

    @property
    def answers(self) -> bool:
        """It replaces the real answer (rather than only delaying it)."""
        return self.status is not None or self.code is not None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "path": self.path,
            "status": self.status,
            "code": self.code,
            "msg": self.msg,
            "remaining": self.remaining,
            "method": self.method,
            "delay": self.delay,
            "hits": self.hits,
        }


class EmulatorState(EmulatorStateBase[Fault]):
    """All mutable state; `notify()` wakes everyone waiting for a change."""

    def __init__(self, apps: list[FeishuApp]) -> None:
        super().__init__()
        self.apps = {app.app_id: app for app in apps}
        self.calls: list[CallRecord] = []
        self.acks: list[AckRecord] = []
        self.cards: dict[str, CardState] = {}
        self.chats: dict[str, Chat] = {}
        self.messages: dict[str, tuple[str, ChatItem]] = {}  # om id -> (chat id, item)
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (app id, monotonic deadline)
        self.latency = 0.0
        self.streaming_timeout = 600.0

    def check_streaming(self, card: CardState) -> None:
        """Streaming mode closes by itself `streaming_timeout` seconds after it was enabled."""
        if (
            card.streaming
            and time.monotonic() - card.streaming_enabled_at >= self.streaming_timeout
        ):
            card.streaming = False
            card.timed_out = True

    def notify(self, chat_id: str | None = None) -> None:
        """Something changed: bump versions and wake waiters."""
        if chat_id is not None and chat_id in self.chats:
            self.chats[chat_id].version += 1
        self.changed()

    def p2p_chat_id(self, app_id: str, open_id: str) -> str:
        """The single chat between a user and a bot (Feishu keeps one per pair)."""
        return "oc_" + stable_hex("p2p", app_id, open_id)

    def chat(self, app_id: str, chat_id: str, chat_type: str, name: str = "") -> Chat:
        """Gets or creates a chat."""
        chat = self.chats.get(chat_id)
        if chat is None:
            chat = self.chats[chat_id] = Chat(chat_id, app_id, chat_type, name)
        elif name and not chat.name:
            chat.name = name
        return chat

    def add_item(self, chat: Chat, item: ChatItem) -> ChatItem:
        """Appends to a transcript and wakes waiters."""
        chat.items.append(item)
        self.messages[item.id] = (chat.chat_id, item)
        self.notify(chat.chat_id)
        return item

    def chat_view(self, chat_id: str) -> dict[str, Any] | None:
        """The transcript with every card rendered as it looks right now."""
        chat = self.chats.get(chat_id)
        if chat is None:
            return None
        items: list[dict[str, Any]] = []
        for item in chat.items:
            entry: dict[str, Any] = {
                "id": item.id,
                "kind": item.kind,
                "at": item.at,
                "msg_type": item.msg_type,
                "text": item.text,
                "reply_to": item.reply_to,
                "sender": item.sender,
            }
            card = self.cards.get(item.card_id) if item.card_id else None
            if card is not None:
                self.check_streaming(card)
                entry.update(
                    card_id=card.card_id,
                    status=card.status,
                    done=card.done,
                    streaming=card.streaming,
                    text=card.text,
                )
            items.append(entry)
        return {
            "chat_id": chat.chat_id,
            "app_id": chat.app_id,
            "chat_type": chat.chat_type,
            "name": chat.name,
            "version": chat.version,
            "items": items,
        }

    def card_copy(self, card_id: str) -> CardState | None:
        """A copy that later changes will not touch."""
        card = self.cards.get(card_id)
        if card is None:
            return None
        self.check_streaming(card)
        return copy.deepcopy(card)
