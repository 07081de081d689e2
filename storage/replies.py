"""The writes of one reply that touch the journal and the conversation together, each one
transaction: the row and the turn never disagree, and an answer costs fewer round trips."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from storage.base import require_aware
from storage.conversations import ConversationRepository
from storage.journal import JournalRepository
from storage.records import JournalState


class AnswerTurn(NamedTuple):
    """The assistant's turn stored with a reply's outcome."""

    conversation_id: str
    text: str
    at: datetime


class ReplyRepository(JournalRepository, ConversationRepository):
    """Reply operations of the Store."""

    async def reply_begun(
        self,
        entry_id: int,
        conversation_id: str,
        *,
        card_id: str | None,
        question: str | None,
        now: datetime,
    ) -> None:
        """The row moves to REPLYING with its conversation and card, and the user's turn is
        stored with it (`question` None: a resumed message's turn is stored already)."""
        now = require_aware(now, "now")
        values = {
            "state": JournalState.REPLYING.value,
            "conversation_id": conversation_id,
            "card_id": card_id,
        }
        async with self._write() as session:
            await self._set_journal(session, entry_id, values)
            if question is not None:
                await self._add_turn(
                    session,
                    conversation_id,
                    role="user",
                    content=question,
                    journal_id=entry_id,
                    now=now,
                )
            await session.commit()

    async def reply_ended(
        self,
        entry_id: int,
        *,
        state: JournalState,
        delivered_text: str | None = None,
        error: str | None = None,
        answer: AnswerTurn | None = None,
    ) -> None:
        """The row records the outcome and what the user saw; `answer`, if any, is stored as the
        conversation's next turn in the same transaction."""
        values = {
            "state": JournalState(state).value,
            "delivered_text": delivered_text,
            "error": error,
        }
        async with self._write() as session:
            await self._set_journal(session, entry_id, values)
            if answer is not None:
                at = require_aware(answer.at, "answer.at")
                await self._add_turn(
                    session,
                    answer.conversation_id,
                    role="assistant",
                    content=answer.text,
                    journal_id=None,
                    now=at,
                )
            await session.commit()
