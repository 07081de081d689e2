"""Immutable records the Store hands out, so callers never hold live ORM rows."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.models import Channel, Conversation, InboundJournal, Message


class JournalState(enum.StrEnum):
    """Where an inbound message is on its way to an answer."""

    RECEIVED = "received"
    REPLYING = "replying"
    REPLIED = "replied"
    FAILED = "failed"
    IGNORED = "ignored"


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
        )
