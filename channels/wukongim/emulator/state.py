"""What the WuKongIM emulator knows and remembers beyond the state every emulator keeps: bots,
stored messages per channel, chats as clients show them, streamed answers, and WuKongIM's error
and fault shapes."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from channels.emulator import http
from channels.emulator.state import CardStatus, EmulatorStateBase, RecordedCall, Transcript
from channels.emulator.state import Fault as FaultBase

SYSTEM_UID = "____system"  # options.G.SystemUID: who sends when `from_uid` is empty
PERSON = 1  # channel types (WuKongIMGoProto)
GROUP = 2
AGENT = 11
SETTING_STREAM = 1 << 1  # wkproto.SettingStream: the anchor of an event stream
SNOWFLAKE_EPOCH_MS = 1288834974657  # bwmarrin/snowflake, which GenMessageId uses


def fake_channel_id(from_uid: str, to_uid: str) -> str:
    """The id a person channel is stored under: both uids, the one with the larger CRC32 first
    (options.GetFakeChannelIDWith), so either side names the same channel."""
    if zlib.crc32(from_uid.encode()) > zlib.crc32(to_uid.encode()):
        return f"{from_uid}@{to_uid}"
    return f"{to_uid}@{from_uid}"


def stored_channel_id(channel_id: str, channel_type: int, from_uid: str) -> str:
    """The channel a message to `channel_id` from `from_uid` is stored in."""
    if channel_type == PERSON:
        return fake_channel_id(from_uid, channel_id)
    if channel_type == AGENT:
        return f"{from_uid}@{channel_id}"
    return channel_id


def is_special(channel_id: str) -> bool:
    """Characters a channel id may not hold (options.IsSpecialChar)."""
    return any(c in channel_id for c in "@#&")


class Snowflake:
    """64-bit message ids as the server's snowflake node makes them: time, node, sequence."""

    def __init__(self, node_id: int = 1001) -> None:
        self._node = node_id & 0x3FF
        self._last_ms = 0
        self._step = 0

    def next(self) -> int:
        """A new id, larger than every earlier one (always above 2**53)."""
        now = int(time.time() * 1000)
        if now <= self._last_ms:
            self._step += 1
            if self._step >= 4096:
                self._last_ms += 1
                self._step = 0
        else:
            self._last_ms, self._step = now, 0
        return ((self._last_ms - SNOWFLAKE_EPOCH_MS) << 22) | (self._node << 12) | self._step


@dataclass(frozen=True, slots=True)
class Bot:
    """A uid the emulator treats as a bot: its chats are listed, its sends are bot messages."""

    bot_uid: str


BotSpec = Bot | str


class ApiError(http.ApiError[int]):
    """A WuKongIM API error: HTTP 400 with `{"msg", "status"}` (wkhttp.ResponseError)."""

    def body(self) -> dict[str, Any]:
        """The JSON body WuKongIM sends with an error."""
        return {"msg": self.message, "status": self.code}


def bad_request(msg: str) -> ApiError:
    """What `c.ResponseError(err)` answers."""
    return ApiError(400, 400, msg)


@dataclass(kw_only=True)
class Fault(FaultBase):
    """An injected HTTP fault: a status (with `msg` and Retry-After), a delay, or both."""

    msg: str = ""
    retry_after: float | None = None


@dataclass
class Message:
    """One persisted message (wkdb.Message): what the webhook and messagesync report."""

    message_id: int
    message_seq: int
    client_msg_no: str
    from_uid: str
    channel_id: str  # as stored: the fake `a@b` id for person channels
    channel_type: int
    payload: bytes
    timestamp: int  # seconds
    setting: int = 0
    red_dot: int = 0
    sync_once: int = 0
    expire: int = 0
    topic: str = ""
    chat_id: str = ""

    @property
    def streamed(self) -> bool:
        """The anchor of an event stream (`is_stream: 1`)."""
        return bool(self.setting & SETTING_STREAM)


@dataclass
class ChatItem:
    """One entry of a chat transcript: a user's message, a bot message or a streamed answer."""

    id: str  # message_idstr
    kind: str  # "user", "message", "card"
    at: float  # time.monotonic()
    sender: str
    text: str
    client_msg_no: str
    payload: Any  # the payload as JSON when it is JSON, else None


@dataclass
class Chat(Transcript):
    """A channel as its members see it."""

    chat_id: str  # the stored channel id (person channels: the fake `a@b` id)
    channel_type: int

    def key(self) -> str:
        """The chat id."""
        return self.chat_id


@dataclass
class StreamCard(CardStatus):
    """A streamed answer as a client following the stream guide renders it from pushed events."""

    message_id: str  # the anchor's message_idstr
    client_msg_no: str
    chat_id: str
    sender: str
    text: str = ""
    streaming: bool = False
    main_status: str = ""  # "closed", "error" or "cancelled" once the main lane ended
    completed: bool = False  # stream.finish arrived
    error: str = ""
    events: list[str] = field(default_factory=list)  # event types pushed, in order

    @property
    def status(self) -> str:
        """`created`, `streaming`, `finished` or `failed` (`cancelled` when cancelled)."""
        if self.main_status == "error":
            return "failed"
        if self.main_status == "cancelled":
            return "cancelled"
        if self.main_status == "closed" or self.completed:
            return "finished"
        return "streaming" if self.events else "created"

    @property
    def done(self) -> bool:
        """No more changes are expected."""
        return self.status in ("finished", "failed", "cancelled")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary for the control plane."""
        return {
            "message_id": self.message_id,
            "client_msg_no": self.client_msg_no,
            "chat_id": self.chat_id,
            "sender": self.sender,
            "text": self.text,
            "status": self.status,
            "done": self.done,
            "streaming": self.streaming,
            "completed": self.completed,
            "error": self.error,
            "events": list(self.events),
        }


class EmulatorState(EmulatorStateBase[Fault, RecordedCall, StreamCard]):
    """All mutable state; `notify()` wakes everyone waiting for a change."""

    def __init__(self, bots: list[Bot]) -> None:
        super().__init__()
        self.apps: dict[str, Bot] = {bot.bot_uid: bot for bot in bots}
        self.chats: dict[str, Chat] = {}
        self.messages: dict[int, Message] = {}  # message id -> message
        self.channels: dict[tuple[str, int], list[Message]] = {}  # stored channel -> messages
        self.device_tokens: dict[tuple[str, int], str] = {}  # (uid, device flag) -> token
        self.ids = Snowflake()

    def store(self, message: Message) -> Message:
        """Persists a message: the next `message_seq` of its channel."""
        channel = self.channels.setdefault((message.channel_id, message.channel_type), [])
        message.message_seq = len(channel) + 1
        channel.append(message)
        self.messages[message.message_id] = message
        return message

    def chat(self, chat_id: str, channel_type: int) -> Chat:
        """Gets or creates a chat."""
        chat = self.chats.get(chat_id)
        if chat is None:
            chat = self.chats[chat_id] = Chat(chat_id, channel_type)
        return chat

    def card_of(self, chat_id: str, client_msg_no: str) -> StreamCard | None:
        """The latest streamed answer of a chat anchored with `client_msg_no`."""
        found = [
            c
            for c in self.cards.values()
            if c.chat_id == chat_id and c.client_msg_no == client_msg_no
        ]
        return found[-1] if found else None

    def item_view(self, item: ChatItem) -> dict[str, Any]:
        """What members see of an item; a streamed answer as it looks right now."""
        entry: dict[str, Any] = {
            "id": item.id,
            "kind": item.kind,
            "at": item.at,
            "sender": item.sender,
            "text": item.text,
            "client_msg_no": item.client_msg_no,
        }
        card = self.cards.get(item.id) if item.kind == "card" else None
        if card is not None:
            entry.update(
                text=card.text,
                status=card.status,
                done=card.done,
                streaming=card.streaming,
                error=card.error,
            )
        return entry
