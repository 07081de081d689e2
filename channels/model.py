"""The platform-neutral shapes that cross the provider boundary. No SDK object passes here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NewType

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


@dataclass(frozen=True, slots=True)
class Attachment:
    kind: str  # "picture", "file", "video", "audio"
    name: str = ""
    handle: str = ""  # platform download handle (DingTalk downloadCode, Feishu file_key)


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
    frame_id: str = ""  # transport-level id (DingTalk headers.messageId), a second dedupe key
    reply_handle: dict[str, Any] = field(default_factory=dict)  # opaque to everyone but the provider


@dataclass(frozen=True, slots=True)
class Delivered:
    """What a reply has put in front of the user so far."""

    card_id: str | None
    text: str
    messages_sent: int
