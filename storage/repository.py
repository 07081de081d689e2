"""The Store: every query the daemon makes, behind one async facade."""

from __future__ import annotations

import asyncio
from typing import Self

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from storage.base import Clock, utc_now
from storage.channels import ChannelRepository
from storage.conversations import ConversationRepository
from storage.engine import open_engine, upgrade
from storage.journal import JournalRepository
from storage.records import (
    ChannelRecord,
    ConversationRecord,
    IdentityRecord,
    JournalEntry,
    JournalState,
    MessageRecord,
    TurnSource,
    UserRecord,
    VoiceCallRecord,
)
from storage.replies import AnswerTurn, ReplyRepository
from storage.users import UserRepository
from storage.voice import VoiceRepository

__all__ = [
    "AnswerTurn",
    "ChannelRecord",
    "ConversationRecord",
    "IdentityRecord",
    "JournalEntry",
    "JournalState",
    "MessageRecord",
    "Store",
    "TurnSource",
    "UserRecord",
    "VoiceCallRecord",
]

# /readyz must answer even when the database hangs rather than refuses.
PING_TIMEOUT = 5.0  # seconds


class Store(
    UserRepository,
    VoiceRepository,
    ReplyRepository,
    JournalRepository,
    ConversationRepository,
    ChannelRepository,
):
    """Async access to channeld's database; one short transaction per call."""

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True, clock: Clock = utc_now) -> Self:
        """Connects to the database (and brings its schema to head unless migrate=False)."""
        engine = await open_engine(url)
        try:
            if migrate:
                await upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, clock=clock)

    async def close(self) -> None:
        """Closes every pooled connection."""
        await self._engine.dispose()

    async def ping(self) -> bool:
        """True if the database answers SELECT 1 within PING_TIMEOUT (for /readyz)."""
        try:
            async with asyncio.timeout(PING_TIMEOUT), self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError, TimeoutError):
            return False
        return True
