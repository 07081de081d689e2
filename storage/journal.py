"""The inbound journal: every platform message is recorded here before it is acked."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.base import StoreBase, completes, require_aware
from storage.models import InboundJournal
from storage.records import FINISHED_STATES, UNFINISHED_STATES, JournalEntry, JournalState


class JournalRepository(StoreBase):
    """Journal operations of the Store."""

    @completes
    async def journal_accept(
        self, channel_id: str, platform_message_id: str, frame_id: str | None, payload: str
    ) -> int | None:
        """Records a RECEIVED message and returns its id, or None for a redelivery."""
        now = self._now()
        row = InboundJournal(
            channel_id=channel_id,
            platform_message_id=platform_message_id,
            frame_id=frame_id,
            state=JournalState.RECEIVED.value,
            payload=payload,
            created_at=now,
            updated_at=now,
        )
        async with self._write(urgent=True) as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                # The unique constraints are the dedupe: a concurrent or earlier delivery of
                # the same message id or frame id won, whichever of them collided.
                return None
        if row.id is None:
            raise RuntimeError("journal insert returned no id")
        return row.id

    @completes
    async def journal_accept_batch(
        self, channel_id: str, messages: Sequence[tuple[str, str]]
    ) -> list[int | None]:
        """Records (platform message id, payload) pairs as RECEIVED in one transaction; the id
        of each row, or None for a redelivery (also of an earlier message of the same batch)."""
        if not messages:
            return []
        now = self._now()
        # ON CONFLICT DO NOTHING on both dialects: a collision skips that row alone, not the
        # batch; RETURNING then yields no id for it
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        table = sa.inspect(InboundJournal).local_table
        ids: list[int | None] = []
        async with self._write(urgent=True) as session:
            for platform_message_id, payload in messages:
                statement = (
                    dialect.insert(table)
                    .values(
                        channel_id=channel_id,
                        platform_message_id=platform_message_id,
                        frame_id=None,
                        state=JournalState.RECEIVED.value,
                        payload=payload,
                        created_at=now,
                        updated_at=now,
                    )
                    .on_conflict_do_nothing()
                    .returning(table.c.id)
                )
                ids.append((await session.exec(statement)).scalar_one_or_none())
            await session.commit()
        return ids

    @completes
    async def journal_update(
        self,
        entry_id: int,
        *,
        state: JournalState | None = None,
        conversation_id: str | None = None,
        card_id: str | None = None,
        delivered_text: str | None = None,
        error: str | None = None,
    ) -> None:
        """Sets the given fields (None leaves a field as is); raises LookupError if absent."""
        values = {
            "state": None if state is None else JournalState(state).value,
            "conversation_id": conversation_id,
            "card_id": card_id,
            "delivered_text": delivered_text,
            "error": error,
        }
        async with self._write() as session:
            await self._set_journal(session, entry_id, values)
            await session.commit()

    async def _set_journal(
        self, session: AsyncSession, entry_id: int, values: dict[str, Any]
    ) -> None:
        """Sets the values that are not None (and updated_at); LookupError if the row is absent."""
        changes = {name: value for name, value in values.items() if value is not None}
        changes["updated_at"] = self._now()
        statement = (
            update(InboundJournal).where(col(InboundJournal.id) == entry_id).values(**changes)
        )
        result = await session.exec(statement)
        if result.rowcount == 0:
            raise LookupError(f"journal entry {entry_id} not found")

    async def journal_get(self, entry_id: int) -> JournalEntry | None:
        """The journal entry with this id, if any."""
        async with self._read() as session:
            row = await session.get(InboundJournal, entry_id)
            return None if row is None else JournalEntry.from_row(row)

    async def journal_unfinished(self, channel_id: str | None = None) -> list[JournalEntry]:
        """Entries still RECEIVED or REPLYING (what start-up recovery handles), oldest first."""
        statement = select(InboundJournal).where(
            col(InboundJournal.state).in_([s.value for s in UNFINISHED_STATES])
        )
        if channel_id is not None:
            statement = statement.where(InboundJournal.channel_id == channel_id)
        async with self._read() as session:
            rows = await session.exec(statement.order_by(col(InboundJournal.id)))
            return [JournalEntry.from_row(row) for row in rows]

    @completes
    async def journal_prune(self, older_than: datetime, *, limit: int | None = None) -> int:
        """Deletes finished entries last updated before older_than (at most `limit`); how many."""
        # Pruned ids no longer dedupe: keep older_than well past the platforms' redelivery window.
        finished_before = (
            col(InboundJournal.state).in_([s.value for s in FINISHED_STATES]),
            col(InboundJournal.updated_at) < require_aware(older_than, "older_than"),
        )
        statement = delete(InboundJournal)
        if limit is None:
            statement = statement.where(*finished_before)
        else:
            # A batch per transaction: the write lock is never held for long (SQLite has one).
            batch = sa.select(col(InboundJournal.id)).where(*finished_before).limit(limit)
            statement = statement.where(col(InboundJournal.id).in_(batch.scalar_subquery()))
        async with self._write() as session:
            result = await session.exec(statement)
            await session.commit()
            return result.rowcount
