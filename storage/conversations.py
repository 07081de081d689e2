"""Users, their platform identities, conversations and message history."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.base import CONFLICT_ATTEMPTS, StoreBase, completes, require_aware
from storage.models import Conversation, Message, PlatformIdentity, UserAccount, VoiceCall
from storage.records import ConversationRecord, MessageRecord

_MESSAGE = sa.inspect(Message).local_table  # its Core table, for reads without a session
KNOWN_USERS = 10_000  # accounts remembered in memory, least recently seen forgotten first


def _new_id() -> str:
    return uuid.uuid4().hex


def _fresh(conversation: Conversation, idle_reset: timedelta, now: datetime) -> bool:
    return conversation.last_activity_at >= now - idle_reset


class ConversationRepository(StoreBase):
    """User, conversation and message operations of the Store."""

    async def resolve_user(
        self, platform: str, tenant: str, platform_user_id: str, display_name: str
    ) -> str:
        """The internal user id of an IM account, created on first sight.

        A changed display name is stored; an empty one keeps the name already known.
        """
        key = (platform, tenant, platform_user_id)
        known = self._known_users.get(key)
        if known is not None and (not display_name or known[1] == display_name):
            self._known_users.move_to_end(key)
            return known[0]
        user_id = await self._resolve_user(platform, tenant, platform_user_id, display_name)
        name = display_name or (known[1] if known else "")
        self._known_users[key] = (user_id, name)
        if len(self._known_users) > KNOWN_USERS:
            self._known_users.popitem(last=False)
        return user_id

    @completes
    async def _resolve_user(
        self, platform: str, tenant: str, platform_user_id: str, display_name: str
    ) -> str:
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            async with self._write() as session:
                statement = (
                    select(PlatformIdentity)
                    .where(
                        PlatformIdentity.platform == platform,
                        PlatformIdentity.tenant == tenant,
                        PlatformIdentity.platform_user_id == platform_user_id,
                    )
                    .with_for_update()
                )
                identity = (await session.exec(statement)).first()
                if identity is not None and (
                    not display_name or identity.display_name == display_name
                ):
                    return identity.user_id
                now = self._now()
                if identity is None and tenant:
                    # a voice call before any message knew the person only by platform id (no
                    # tenant): their first message gives that identity its tenant, so the call
                    # and the chat stay one person
                    untenanted = (
                        await session.exec(
                            select(PlatformIdentity)
                            .where(
                                PlatformIdentity.platform == platform,
                                PlatformIdentity.tenant == "",
                                PlatformIdentity.platform_user_id == platform_user_id,
                            )
                            .with_for_update()
                        )
                    ).first()
                    if untenanted is not None:
                        untenanted.tenant = tenant
                        identity = untenanted
                if identity is None:
                    identity = await self._create_user(
                        session,
                        platform=platform,
                        tenant=tenant,
                        platform_user_id=platform_user_id,
                        display_name=display_name,
                        now=now,
                    )
                else:
                    identity.display_name = display_name
                    identity.updated_at = now
                    # a directory's person keeps the directory's name, whatever the platform says
                    await session.exec(
                        update(UserAccount)
                        .where(
                            col(UserAccount.id) == identity.user_id,
                            col(UserAccount.directory_id).is_(None),
                        )
                        .values(display_name=display_name, updated_at=now)
                    )
                try:
                    await session.commit()
                except IntegrityError:
                    # Another caller created the same identity first; the next round reads it.
                    if attempt == CONFLICT_ATTEMPTS:
                        raise
                    continue
                return identity.user_id
        raise AssertionError("unreachable")

    @staticmethod
    async def _create_user(
        session: AsyncSession,
        *,
        platform: str,
        tenant: str,
        platform_user_id: str,
        display_name: str,
        now: datetime,
    ) -> PlatformIdentity:
        user = UserAccount(id=_new_id(), display_name=display_name, created_at=now, updated_at=now)
        session.add(user)
        await session.flush()  # the identity's foreign key needs the user row first
        identity = PlatformIdentity(
            platform=platform,
            tenant=tenant,
            platform_user_id=platform_user_id,
            user_id=user.id,
            display_name=display_name,
            created_at=now,
            updated_at=now,
        )
        session.add(identity)
        return identity

    async def conversation_with_history(
        self,
        channel_id: str,
        key: str,
        user_id: str,
        *,
        idle_reset: timedelta,
        now: datetime,
        limit: int,
        adopt: str | None = None,
    ) -> tuple[ConversationRecord, list[MessageRecord]]:
        """The key's open conversation (new if none, or idle too long) and its last `limit` turns.

        The turns come oldest first. One read transaction when the conversation is open and fresh
        (the usual case, and outside the writers' queue on SQLite); a write only when one must be
        opened. `adopt`: a key whose open, fresh conversation becomes this key's instead of a new
        one (a voice call before any chat opens one keyed by the user, not by the chat).
        """
        now = require_aware(now, "now")
        async with self._read() as session:
            current = await self._open_conversation(session, channel_id, key, lock=False)
            if current is not None and _fresh(current, idle_reset, now):
                history = await self._recent(session, current.id, limit)
                return ConversationRecord.from_row(current), history
        record, created = await self._current(
            channel_id, key, user_id, idle_reset=idle_reset, now=now, adopt=adopt
        )
        # one a concurrent caller opened in between may have turns already; ours has none
        return record, [] if created else await self.recent_messages(record.id, limit)

    @completes
    async def _current(
        self,
        channel_id: str,
        key: str,
        user_id: str,
        *,
        idle_reset: timedelta,
        now: datetime,
        adopt: str | None = None,
    ) -> tuple[ConversationRecord, bool]:
        """The open conversation for the key, opened here (True) if need be (or adopted from the
        `adopt` key's open conversation, which then takes this key)."""
        now = require_aware(now, "now")
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            async with self._write() as session:
                current = await self._open_conversation(session, channel_id, key)
                if current is not None and _fresh(current, idle_reset, now):
                    return ConversationRecord.from_row(current), False
                if current is None and adopt is not None and adopt != key:
                    orphan = await self._open_conversation(session, channel_id, adopt)
                    if orphan is not None and _fresh(orphan, idle_reset, now):
                        orphan.key = key
                        orphan.last_activity_at = now
                        adopted = ConversationRecord.from_row(orphan)
                        if await self._commit_or_conflict(
                            session, last=attempt == CONFLICT_ATTEMPTS
                        ):
                            return adopted, False
                        continue
                if current is not None:
                    current.closed_at = now
                    # The partial unique index allows one open row per key: close first.
                    await session.flush()
                created = self._add_conversation(session, channel_id, key, user_id, now)
                if await self._commit_or_conflict(session, last=attempt == CONFLICT_ATTEMPTS):
                    return ConversationRecord.from_row(created), True
        raise AssertionError("unreachable")

    @completes
    async def start_new_conversation(
        self, channel_id: str, key: str, user_id: str, *, now: datetime
    ) -> ConversationRecord:
        """Closes the open conversation for the key (if any) and opens a new one (/new)."""
        now = require_aware(now, "now")
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            async with self._write() as session:
                await session.exec(
                    update(Conversation)
                    .where(
                        col(Conversation.channel_id) == channel_id,
                        col(Conversation.key) == key,
                        col(Conversation.closed_at).is_(None),
                    )
                    .values(closed_at=now)
                )
                created = self._add_conversation(session, channel_id, key, user_id, now)
                if await self._commit_or_conflict(session, last=attempt == CONFLICT_ATTEMPTS):
                    return ConversationRecord.from_row(created)
        raise AssertionError("unreachable")

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        """The conversation with this id, open or closed."""
        async with self._read() as session:
            row = await session.get(Conversation, conversation_id)
            return None if row is None else ConversationRecord.from_row(row)

    @completes
    async def append_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        journal_id: int | None = None,
        now: datetime,
    ) -> None:
        """Stores a turn and marks the conversation active; LookupError if it does not exist."""
        now = require_aware(now, "now")
        async with self._write() as session:
            await self._add_turn(
                session, conversation_id, role=role, content=content, journal_id=journal_id, now=now
            )
            await session.commit()

    async def recent_messages(self, conversation_id: str, limit: int) -> list[MessageRecord]:
        """The last `limit` messages of a conversation, oldest first.

        One Core statement on a pooled connection, no ORM session: the voice endpoint reads this
        before every utterance is answered, and the session's bookkeeping doubled the CPU.
        """
        if limit <= 0:
            return []
        statement = (
            sa.select(_MESSAGE)
            .where(_MESSAGE.c.conversation_id == conversation_id)
            .order_by(_MESSAGE.c.id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [MessageRecord.from_mapping(dict(row._mapping)) for row in reversed(rows)]

    @staticmethod
    async def _add_turn(
        session: AsyncSession,
        conversation_id: str,
        *,
        role: str,
        content: str,
        journal_id: int | None,
        now: datetime,
    ) -> None:
        result = await session.exec(
            update(Conversation)
            .where(col(Conversation.id) == conversation_id)
            .values(last_activity_at=now)
        )
        if result.rowcount == 0:
            raise LookupError(f"conversation {conversation_id} not found")
        session.add(
            Message(
                conversation_id=conversation_id,
                role=role,
                content=content,
                journal_id=journal_id,
                created_at=now,
            )
        )

    @staticmethod
    async def _recent(
        session: AsyncSession, conversation_id: str, limit: int
    ) -> list[MessageRecord]:
        if limit <= 0:
            return []
        statement = (
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(col(Message.id).desc())
            .limit(limit)
        )
        rows = list(await session.exec(statement))
        return [MessageRecord.from_row(row) for row in reversed(rows)]

    async def list_conversations(
        self, channel_id: str | None = None, limit: int = 100, *, user_id: str | None = None
    ) -> list[ConversationRecord]:
        """Conversations, open and closed, most recently active first; `user_id`: only those
        opened for that user (an identity linked to a person later leaves its earlier
        conversations with the user it had)."""
        statement = select(Conversation)
        if channel_id is not None:
            statement = statement.where(Conversation.channel_id == channel_id)
        if user_id is not None:
            statement = statement.where(Conversation.user_id == user_id)
        statement = statement.order_by(
            col(Conversation.last_activity_at).desc(), col(Conversation.id)
        ).limit(limit)
        async with self._read() as session:
            return [ConversationRecord.from_row(row) for row in await session.exec(statement)]

    @completes
    async def conversations_prune(self, older_than: datetime, *, limit: int | None = None) -> int:
        """Deletes conversations (messages too) last active before older_than and without a
        voice call under way; how many."""
        calling = sa.exists().where(
            col(VoiceCall.conversation_id) == col(Conversation.id),
            col(VoiceCall.ended_at).is_(None),
        )
        idle = sa.and_(
            col(Conversation.last_activity_at) < require_aware(older_than, "older_than"),
            sa.not_(calling),
        )
        statement = delete(Conversation)
        if limit is None:
            statement = statement.where(idle)
        else:
            # A batch per transaction: the write lock is never held for long (SQLite has one).
            batch = sa.select(col(Conversation.id)).where(idle).limit(limit)
            statement = statement.where(col(Conversation.id).in_(batch.scalar_subquery()))
        # The foreign keys do the rest: messages cascade, journal rows keep no link.
        async with self._write() as session:
            result = await session.exec(statement)
            await session.commit()
            return result.rowcount

    @staticmethod
    async def _open_conversation(
        session: AsyncSession, channel_id: str, key: str, *, lock: bool = True
    ) -> Conversation | None:
        statement = select(Conversation).where(
            Conversation.channel_id == channel_id,
            Conversation.key == key,
            col(Conversation.closed_at).is_(None),
        )
        if lock:
            statement = statement.with_for_update()
        return (await session.exec(statement)).first()

    @staticmethod
    def _add_conversation(
        session: AsyncSession, channel_id: str, key: str, user_id: str, now: datetime
    ) -> Conversation:
        row = Conversation(
            id=_new_id(),
            channel_id=channel_id,
            key=key,
            user_id=user_id,
            created_at=now,
            last_activity_at=now,
        )
        session.add(row)
        return row

    @staticmethod
    async def _commit_or_conflict(session: AsyncSession, *, last: bool) -> bool:
        # False when a concurrent caller opened a conversation for the same key first: the
        # partial unique index refused ours, and the next round picks theirs up.
        try:
            await session.commit()
        except IntegrityError:
            if last:
                raise
            return False
        return True
