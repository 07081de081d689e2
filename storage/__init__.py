"""Persistence: SQLModel tables, engine, repositories, Alembic migrations."""

from storage.engine import migrate
from storage.records import (
    ChannelRecord,
    ConversationRecord,
    JournalEntry,
    JournalState,
    MessageRecord,
)
from storage.repository import Store

__all__ = [
    "ChannelRecord",
    "ConversationRecord",
    "JournalEntry",
    "JournalState",
    "MessageRecord",
    "Store",
    "migrate",
]
