"""The writes of one reply that touch the journal and the conversation together, each one
transaction: the row and the turn never disagree, and an answer costs fewer round trips."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.base import require_aware
from storage.conversations import ConversationRepository
from storage.journal import JournalRepository
from storage.models import Message
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

    async def reply_finishing(self, entry_id: int, answer: AnswerTurn) -> None:
        """The complete answer is stored, linked to its row, before its final text is sent.

        A crash between the final text reaching the user and `reply_ended` leaves the row
        `replying` with its answer here: recovery ends the card with it instead of answering the
        message again. An answer stored earlier for the same row is replaced.
        """
        at = require_aware(answer.at, "answer.at")
        async with self._write(urgent=True) as session:
            await self._forget_answer(session, entry_id)
            await self._add_turn(
                session,
                answer.conversation_id,
                role="assistant",
                content=answer.text,
                journal_id=entry_id,
                now=at,
            )
            await session.commit()

    async def finishing_answer(self, entry_id: int) -> str | None:
        """The answer `reply_finishing` stored for the row, if any."""
        statement = select(Message.content).where(
            Message.journal_id == entry_id, Message.role == "assistant"
        )
        async with self._read() as session:
            return (await session.exec(statement.order_by(col(Message.id).desc()))).first()

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
        `reply_finishing` stored (the final text never reached the user)."""
        values = {
            "state": JournalState(state).value,
            "delivered_text": delivered_text,
            "error": error,
        }
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
            await session.commit()

    @staticmethod
    async def _forget_answer(session: AsyncSession, entry_id: int) -> None:
        await session.exec(
            delete(Message).where(
                col(Message.journal_id) == entry_id, col(Message.role) == "assistant"
            )
        )
