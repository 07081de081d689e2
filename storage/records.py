"""Immutable records the Store hands out, so callers never hold live ORM rows."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from storage.models import (
    Channel,
    Conversation,
    InboundJournal,
    Message,
    PlatformIdentity,
    UserAccount,
    VoiceCall,
)


class JournalState(enum.StrEnum):
    """Where an inbound message is on its way to an answer."""

    RECEIVED = "received"
    REPLYING = "replying"
    REPLIED = "replied"
    FAILED = "failed"
    IGNORED = "ignored"


class TurnSource(enum.StrEnum):
    """How a turn reached the conversation."""

    TEXT = "text"  # typed in the channel's chat
    VOICE = "voice"  # spoken in a voice call (the cloud's speech-to-text, or the spoken answer)


UNFINISHED_STATES = (JournalState.RECEIVED, JournalState.REPLYING)
FINISHED_STATES = (JournalState.REPLIED, JournalState.FAILED, JournalState.IGNORED)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One inbound message as journaled, with the progress of its reply."""

    id: int
    channel_id: str
    platform_message_id: str
    frame_id: str | None
    state: JournalState
    payload: str  # JSON text
    conversation_id: str | None
    card_id: str | None
    delivered_text: str
    error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: InboundJournal) -> JournalEntry:
        """Copies a journal row."""
        if row.id is None:
            raise ValueError("journal row was never flushed")
        return cls(
            id=row.id,
            channel_id=row.channel_id,
            platform_message_id=row.platform_message_id,
            frame_id=row.frame_id,
            state=JournalState(row.state),
            payload=row.payload,
            conversation_id=row.conversation_id,
            card_id=row.card_id,
            delivered_text=row.delivered_text,
            error=row.error,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """A conversation; closed_at is set once /new or idleness ended it."""

    id: str
    channel_id: str
    key: str
    user_id: str
    created_at: datetime
    last_activity_at: datetime
    closed_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Conversation) -> ConversationRecord:
        """Copies a conversation row."""
        return cls(
            id=row.id,
            channel_id=row.channel_id,
            key=row.key,
            user_id=row.user_id,
            created_at=row.created_at,
            last_activity_at=row.last_activity_at,
            closed_at=row.closed_at,
        )


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    """Desired state of a channel."""

    id: str
    type: str
    agent: str
    enabled: bool
    source: str  # "config" | "api"
    spec: dict[str, Any]  # JSON-serialisable channel settings
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Channel) -> ChannelRecord:
        """Copies a channel row (the spec dict is copied too)."""
        return cls(
            id=row.id,
            type=row.type,
            agent=row.agent,
            enabled=row.enabled,
            source=row.source,
            spec=dict(row.spec),
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One stored turn of a conversation."""

    id: int
    conversation_id: str
    role: str
    content: str
    journal_id: int | None
    created_at: datetime
    source: TurnSource = TurnSource.TEXT
    voice_call_id: str | None = None
    voice_round: str | None = None  # the cloud's round (ZEGO) or sentence (Alibaba) id
    interrupted: bool = False  # a spoken answer the user cut short

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> MessageRecord:
        """A message read with Core: the columns by name."""
        return cls(
            id=row["id"],
            conversation_id=row["conversation_id"],
            role=row["role"],
            content=row["content"],
            journal_id=row["journal_id"],
            created_at=row["created_at"],
            source=TurnSource(row["source"]),
            voice_call_id=row["voice_call_id"],
            voice_round=row["voice_round"],
            interrupted=row["interrupted"],
        )

    @classmethod
    def from_row(cls, row: Message) -> MessageRecord:
        """Copies a message row."""
        if row.id is None:
            raise ValueError("message row was never flushed")
        return cls(
            id=row.id,
            conversation_id=row.conversation_id,
            role=row.role,
            content=row.content,
            journal_id=row.journal_id,
            created_at=row.created_at,
            source=TurnSource(row.source),
            voice_call_id=row.voice_call_id,
            voice_round=row.voice_round,
            interrupted=row.interrupted,
        )


@dataclass(frozen=True, slots=True)
class VoiceCallRecord:
    """A voice call: who calls, in which conversation, on which cloud, and whether it ended."""

    id: str
    channel_id: str
    provider: str  # "zego" | "aliyun"
    conversation_id: str
    user_id: str  # the internal user
    platform_user_id: str  # the user's id on the channel's platform
    secret_hash: str  # sha256 hex of the per-call secret
    started_at: datetime
    expires_at: datetime
    instance_id: str | None = None  # the cloud's agent instance, once it answered
    details: dict[str, Any] = field(default_factory=dict)  # what the app joins with; no secrets
    ended_at: datetime | None = None
    end_reason: str | None = None

    def active(self, now: datetime) -> bool:
        """Not ended, and not past its expiry at `now`."""
        return self.ended_at is None and self.expires_at > now

    @classmethod
    def from_row(cls, row: VoiceCall) -> VoiceCallRecord:
        """Copies a voice call row (the details dict is copied too)."""
        return cls(
            id=row.id,
            channel_id=row.channel_id,
            provider=row.provider,
            conversation_id=row.conversation_id,
            user_id=row.user_id,
            platform_user_id=row.platform_user_id,
            secret_hash=row.secret_hash,
            started_at=row.started_at,
            expires_at=row.expires_at,
            instance_id=row.instance_id,
            details=dict(row.details),
            ended_at=row.ended_at,
            end_reason=row.end_reason,
        )


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A person: one internal user, however many platform identities point at it."""

    id: str
    display_name: str
    email: str | None  # lower-cased; None for auto users
    groups: tuple[str, ...]  # as the directory last said
    auth_source: str  # "auto" | "file" | "http" | "ldap" | a platform's name
    directory_id: str | None  # the directory's id for the person; None for auto users
    blocked: bool
    blocked_notice_at: datetime | None  # when a blocked person was last told so
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: UserAccount) -> UserRecord:
        """Copies a user row."""
        return cls(
            id=row.id,
            display_name=row.display_name,
            email=row.email,
            groups=tuple(row.groups),
            auth_source=row.auth_source,
            directory_id=row.directory_id,
            blocked=row.blocked,
            blocked_notice_at=row.blocked_notice_at,
            last_seen_at=row.last_seen_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """An IM account (platform, tenant, platform user id) and the user it belongs to."""

    id: int
    platform: str
    tenant: str
    platform_user_id: str
    user_id: str
    display_name: str  # the name the platform last gave
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: PlatformIdentity) -> IdentityRecord:
        """Copies an identity row."""
        if row.id is None:
            raise ValueError("identity row was never flushed")
        return cls(
            id=row.id,
            platform=row.platform,
            tenant=row.tenant,
            platform_user_id=row.platform_user_id,
            user_id=row.user_id,
            display_name=row.display_name,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
