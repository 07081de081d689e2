"""The platform-neutral shapes that cross the provider boundary. No SDK object passes here."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, NewType

from channels import normalize

ChannelId = NewType("ChannelId", str)


class ChatType(enum.StrEnum):
    DIRECT = "direct"
    GROUP = "group"


class ChannelState(enum.StrEnum):
    """What an operator sees; `connected` means the platform handshake succeeded."""

    DISABLED = "disabled"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Sender:
    platform_id: str
    display_name: str = ""
    extra_ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # normalised on construction, so no provider can forget it (channels/normalize.py)
        _set(self, "platform_id", normalize.platform_id(self.platform_id))
        _set(self, "display_name", normalize.name(self.display_name))
        extra = {normalize.clean(k): normalize.platform_id(v) for k, v in self.extra_ids.items()}
        _set(self, "extra_ids", extra)


@dataclass(frozen=True, slots=True)
class SenderProfile:
    """What a platform's user-info API tells about a sender; "" where it said nothing."""

    email: str = ""
    mobile: str = ""
    employee_no: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    kind: str  # "picture", "file", "video", "audio"
    name: str = ""
    handle: str = ""  # platform download handle (DingTalk downloadCode, Feishu file_key)

    def __post_init__(self) -> None:
        _set(self, "name", normalize.name(self.name))
        _set(self, "handle", normalize.clean(self.handle))


_DESCRIBED_KINDS = {
    "picture": "an image",
    "file": "a file",
    "video": "a video",
    "audio": "a voice message",
    "sticker": "a sticker",
}


def describe_attachment(attachment: Attachment) -> str:
    """What the agent is told when a user sends something it cannot read itself."""
    what = _DESCRIBED_KINDS.get(attachment.kind, f"a {attachment.kind} attachment")
    name = f" named {attachment.name!r}" if attachment.name else ""
    return f"[The user sent {what}{name}, which cannot be shown to you here.]"


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message a user sent to a bot, as the handler sees it."""

    channel_id: ChannelId
    platform: str
    message_id: str  # platform message id: the dedupe key
    chat_id: str
    chat_type: ChatType
    sender: Sender
    text: str
    received_at: datetime
    attachments: tuple[Attachment, ...] = ()
    bot_mentioned: bool = False
    tenant: str = ""  # corp / tenant key, part of the identity of the sender
    frame_id: str = ""  # transport-level id (DingTalk headers.messageId), a second dedupe key
    reply_handle: dict[str, Any] = field(
        default_factory=dict
    )  # opaque to everyone but the provider

    def __post_init__(self) -> None:
        # Every value a platform sent is made storable here, whichever provider built the message:
        # SQLite and PostgreSQL then store exactly the same thing (channels/normalize.py).
        _set(self, "message_id", normalize.platform_id(self.message_id))
        _set(self, "chat_id", normalize.platform_id(self.chat_id))
        _set(self, "tenant", normalize.platform_id(self.tenant))
        _set(self, "frame_id", normalize.platform_id(self.frame_id))
        _set(self, "text", normalize.text(self.text))
        _set(self, "reply_handle", normalize.deep(self.reply_handle))


def _set(instance: object, attribute: str, value: Any) -> None:
    """Assigns a normalised value on a frozen dataclass, only when it changed."""
    if getattr(instance, attribute) is not value:
        object.__setattr__(instance, attribute, value)


@dataclass(frozen=True, slots=True)
class Delivered:
    """What a reply has put in front of the user so far."""

    card_id: str | None
    text: str


def inbound_to_json(message: InboundMessage) -> str:
    """Serialise for the journal, so an unanswered message can be recovered after a restart."""
    data = asdict(message)
    data["received_at"] = message.received_at.isoformat()
    return json.dumps(data, ensure_ascii=False)


def inbound_from_json(text: str) -> InboundMessage:
    """Inverse of `inbound_to_json`."""
    data = json.loads(text)
    return InboundMessage(
        channel_id=ChannelId(data["channel_id"]),
        platform=data["platform"],
        message_id=data["message_id"],
        chat_id=data["chat_id"],
        chat_type=ChatType(data["chat_type"]),
        sender=Sender(**data["sender"]),
        text=data["text"],
        received_at=datetime.fromisoformat(data["received_at"]),
        attachments=tuple(Attachment(**a) for a in data["attachments"]),
        bot_mentioned=data["bot_mentioned"],
        tenant=data["tenant"],
        frame_id=data["frame_id"],
        reply_handle=data["reply_handle"],
    )
