"""What the Feishu emulator knows and remembers beyond the state every emulator keeps: apps,
messages, CardKit cards and chats, and Feishu's error and fault shapes."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from channels.emulator import http
from channels.emulator.state import (
    CardStatus,
    EmulatorStateBase,
    It,
    RecordedCall,
    Transcript,
)
from channels.emulator.state import Fault as FaultBase

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


# an app, or (app_id, app_secret[, bot_name])
AppSpec = FeishuApp | tuple[str, str] | tuple[str, str, str]


class ApiError(http.ApiError[int]):
    """A Feishu OpenAPI error: HTTP status, business `code` and `msg`."""

    def body(self) -> dict[str, Any]:
        """The JSON body Feishu sends with an error."""
        return error_body(self.code, self.message)


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
class CallRecord(RecordedCall):
    """One HTTP call the emulator answered; tokens and secrets are never kept."""

    code: int | None  # the business code of the answer, None when it had none
    app_id: str  # "" when unknown


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
class CardState(CardStatus):
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
class Chat(Transcript):
    """A chat as its members see it."""

    chat_id: str
    app_id: str
    chat_type: str  # "p2p" or "group"
    name: str = ""

    def key(self) -> str:
        """The oc_ chat id."""
        return self.chat_id


@dataclass(kw_only=True)
class Fault(FaultBase):
    """An injected HTTP fault: a status or business-code answer, a delay, or both."""

    code: int | None = None
    msg: str = ""

    @property
    def answers(self) -> bool:
        """It replaces the real answer (rather than only delaying it)."""
        return self.status is not None or self.code is not None


class EmulatorState(EmulatorStateBase[Fault, CallRecord, CardState]):
    """All mutable state; `notify()` wakes everyone waiting for a change."""

    def __init__(self, apps: list[FeishuApp]) -> None:
        super().__init__()
        self.apps: dict[str, FeishuApp] = {app.app_id: app for app in apps}
        self.acks: list[AckRecord] = []
        self.chats: dict[str, Chat] = {}
        self.messages: dict[str, tuple[str, ChatItem]] = {}  # om id -> (chat id, item)
        self.streaming_timeout = 600.0

    def refresh(self, card: CardState) -> None:
        """Streaming mode closes by itself `streaming_timeout` seconds after it was enabled."""
        if (
            card.streaming
            and time.monotonic() - card.streaming_enabled_at >= self.streaming_timeout
        ):
            card.streaming = False
            card.timed_out = True

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

    def add_item(self, chat: Transcript, item: It) -> It:
        """Appends to a transcript, where replies find it by its om_ id, and wakes waiters."""
        if isinstance(item, ChatItem):
            self.messages[item.id] = (chat.key(), item)
        return super().add_item(chat, item)

    def item_view(self, item: ChatItem) -> dict[str, Any]:
        """What members see of an item; a card with its text and status as they are now."""
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
            self.refresh(card)
            entry.update(
                card_id=card.card_id,
                status=card.status,
                done=card.done,
                streaming=card.streaming,
                text=card.text,
            )
        return entry
