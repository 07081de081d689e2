"""The writes of one reply that touch the journal and the conversation together, each one
transaction: the row and the turn never disagree, and an answer costs fewer round trips.

The final text waits for `reply_finishing`, so it is one statement: on SQLite through aiosqlite
every statement is three hops between the event loop and the driver's thread, each costing a loop
turn (and the GIL) when the daemon is busy. What can wait happens in `reply_begun` or
`reply_ended`, which nothing visible waits for.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import delete, insert, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.base import completes, require_aware
from storage.conversations import ConversationRepository
from storage.journal import JournalRepository
from storage.models import Conversation, InboundJournal, Message
from storage.records import JournalState


class AnswerTurn(NamedTuple):
    """The assistant's turn stored with a reply's outcome."""

    conversation_id: str
    text: str
    at: datetime


class ReplyRepository(JournalRepository, ConversationRepository):
    """Reply operations of the Store."""

    @completes
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
        stored with it. `question` None: a resumed message, whose turn is stored already; an
        answer an earlier run stored for it goes (this run stores its own)."""
        now = require_aware(now, "now")
        values = {
            "state": JournalState.REPLYING.value,
            "conversation_id": conversation_id,
            "card_id": card_id,
        }
        async with self._write() as session:
            await self._set_journal(session, entry_id, values)
            if question is None:
                await self._forget_answer(session, entry_id)
            else:
                await self._add_turn(
                    session,
                    conversation_id,
                    role="user",
                    content=question,
                    journal_id=entry_id,
                    now=now,
                )
            await session.commit()

    @completes
    async def reply_finishing(self, entry_id: int, answer: AnswerTurn) -> None:
        """The complete answer is stored, linked to its row, before its final text is sent.

        A crash between the final text reaching the user and `reply_ended` leaves the row
        `replying` with its answer here: recovery ends the card with it instead of answering the
        message again. One insert: the conversation's activity time moves in `reply_ended`, and
        an answer stored by an earlier run went in `reply_begun`.
        """
        turn = {
            "conversation_id": answer.conversation_id,
            "role": "assistant",
            "content": answer.text,
            "journal_id": entry_id,
            "created_at": require_aware(answer.at, "answer.at"),
        }
        async with self._write(urgent=True) as session:
            await session.exec(insert(Message).values(turn))
            await session.commit()

    async def finishing_answer(self, entry_id: int) -> str | None:
        """The answer `reply_finishing` stored for the row, if any."""
        statement = select(Message.content).where(
            Message.journal_id == entry_id, Message.role == "assistant"
        )
        async with self._read() as session:
            return (await session.exec(statement.order_by(col(Message.id).desc()))).first()

    @completes
    async def reply_ended(
        self,
        entry_id: int,
        *,
        state: JournalState,
        delivered_text: str | None = None,
        error: str | None = None,
        answer: AnswerTurn | None = None,
        forget_answer: bool = False,
    ) -> None:
        """The row records the outcome and what the user saw; `answer`, if any, is stored as the
        conversation's next turn in the same transaction; `forget_answer` removes the one
        `reply_finishing` stored (the final text never reached the user). A reply that reached
        the user is its conversation's latest activity."""
        state = JournalState(state)
        values = {"state": state.value, "delivered_text": delivered_text, "error": error}
        async with self._write() as session:
            await self._set_journal(session, entry_id, values)
            if forget_answer:
                await self._forget_answer(session, entry_id)
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
            elif state is JournalState.REPLIED:
                await self._touch_conversation_of(session, entry_id)
            await session.commit()

    async def _touch_conversation_of(self, session: AsyncSession, entry_id: int) -> None:
        """The row's conversation (if it still has one) was active now."""
        of_row = select(InboundJournal.conversation_id).where(InboundJournal.id == entry_id)
        await session.exec(
            update(Conversation)
            .where(col(Conversation.id) == of_row.scalar_subquery())
            .values(last_activity_at=self._now())
        )

    @staticmethod
    async def _forget_answer(session: AsyncSession, entry_id: int) -> None:
        await session.exec(
            delete(Message).where(
                col(Message.journal_id) == entry_id, col(Message.role) == "assistant"
            )
        )
