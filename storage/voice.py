"""Voice calls and their turns: the calls a cloud voice agent makes to channeld as its LLM, and
what was said in them, stored in the same conversation as the user's text chat.

Turn text is stored as given: callers normalise it first (channels.normalize.text), as they do
for text turns; PostgreSQL refuses NUL and lone surrogates where SQLite would keep them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import col, select

from storage.base import completes, require_aware
from storage.conversations import ConversationRepository
from storage.models import Conversation, Message, PlatformIdentity, VoiceCall
from storage.records import ConversationRecord, MessageRecord, TurnSource, VoiceCallRecord

DIRECT_PREFIX = "direct:"  # conversation keys of direct chats (channels.conversations)
_TURN_KEY = ("voice_call_id", "voice_round", "role")  # uq_message_voice_turn


def _upsert(dialect: str, values: dict[str, Any], *, keep_interrupted: bool) -> Insert:
    """Inserts the turn, or replaces the content and interruption of the round's stored one
    (unless `keep_interrupted` and the stored one is marked interrupted)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Message).values(values)
    return statement.on_conflict_do_update(
        index_elements=list(_TURN_KEY),
        set_={
            "content": statement.excluded.content,
            "interrupted": statement.excluded.interrupted,
        },
        where=col(Message.interrupted).is_(False) if keep_interrupted else None,
    )


class VoiceRepository(ConversationRepository):
    """Voice call and voice turn operations of the Store."""

    @completes
    async def voice_call_add(self, record: VoiceCallRecord) -> None:
        """Stores a new call (before the cloud is asked to start it); its conversation counts as
        active from the call's start, unless it was active later already."""
        row = VoiceCall(
            id=record.id,
            channel_id=record.channel_id,
            provider=record.provider,
            conversation_id=record.conversation_id,
            user_id=record.user_id,
            platform_user_id=record.platform_user_id,
            secret_hash=record.secret_hash,
            instance_id=record.instance_id,
            details=dict(record.details),
            started_at=require_aware(record.started_at, "started_at"),
            expires_at=require_aware(record.expires_at, "expires_at"),
            ended_at=None
            if record.ended_at is None
            else require_aware(record.ended_at, "ended_at"),
            end_reason=record.end_reason,
        )
        async with self._write() as session:
            session.add(row)
            await session.exec(
                update(Conversation)
                .where(
                    col(Conversation.id) == record.conversation_id,
                    col(Conversation.last_activity_at) < row.started_at,
                )
                .values(last_activity_at=row.started_at)
            )
            await session.commit()

    async def voice_call_get(self, call_id: str) -> VoiceCallRecord | None:
        """The call with this id, ended or not."""
        async with self._read() as session:
            row = await session.get(VoiceCall, call_id)
            return None if row is None else VoiceCallRecord.from_row(row)

    async def voice_call_by_secret(self, secret_hash: str) -> VoiceCallRecord | None:
        """The call whose per-call secret hashes to `secret_hash`, ended or not."""
        statement = select(VoiceCall).where(VoiceCall.secret_hash == secret_hash)
        async with self._read() as session:
            row = (await session.exec(statement)).first()
            return None if row is None else VoiceCallRecord.from_row(row)

    async def voice_call_by_instance(
        self, provider: str, instance_id: str
    ) -> VoiceCallRecord | None:
        """The latest call the cloud knows as `instance_id`, ended or not."""
        statement = (
            select(VoiceCall)
            .where(VoiceCall.provider == provider, VoiceCall.instance_id == instance_id)
            .order_by(col(VoiceCall.started_at).desc(), col(VoiceCall.id))
            .limit(1)
        )
        async with self._read() as session:
            row = (await session.exec(statement)).first()
            return None if row is None else VoiceCallRecord.from_row(row)

    @completes
    async def voice_call_started(
        self, call_id: str, *, instance_id: str, details: dict[str, Any]
    ) -> bool:
        """Records what the cloud answered to the start, on a call not ended meanwhile (a DELETE
        while it started); whether it was (False: ended or deleted, the instance must go)."""
        statement = (
            update(VoiceCall)
            .where(col(VoiceCall.id) == call_id, col(VoiceCall.ended_at).is_(None))
            .values(instance_id=instance_id, details=dict(details))
        )
        async with self._write() as session:
            result = await session.exec(statement)
            await session.commit()
            return bool(result.rowcount)

    @completes
    async def voice_call_end(
        self, call_id: str, *, reason: str, now: datetime
    ) -> VoiceCallRecord | None:
        """Ends a call that has not ended and returns it; None if it had ended or is unknown.

        One conditional UPDATE: of two enders racing (a hang-up and the cloud's callback), one
        gets the call back and the other None, so whatever follows an end happens once.
        """
        statement = (
            update(VoiceCall)
            .where(col(VoiceCall.id) == call_id, col(VoiceCall.ended_at).is_(None))
            .values(ended_at=require_aware(now, "now"), end_reason=reason)
            .returning(VoiceCall)
        )
        async with self._write() as session:
            row = (await session.exec(statement)).scalars().first()
            await session.commit()
            return None if row is None else VoiceCallRecord.from_row(row)

    async def voice_calls_active(self, channel_id: str | None = None) -> list[VoiceCallRecord]:
        """Calls not ended, oldest first; expired ones not yet ended are included."""
        statement = select(VoiceCall).where(col(VoiceCall.ended_at).is_(None))
        if channel_id is not None:
            statement = statement.where(VoiceCall.channel_id == channel_id)
        statement = statement.order_by(col(VoiceCall.started_at), col(VoiceCall.id))
        async with self._read() as session:
            return [VoiceCallRecord.from_row(row) for row in await session.exec(statement)]

    async def voice_calls_of_conversation(self, conversation_id: str) -> list[VoiceCallRecord]:
        """Every call of the conversation, ended or not, in the order they started."""
        statement = (
            select(VoiceCall)
            .where(VoiceCall.conversation_id == conversation_id)
            .order_by(col(VoiceCall.started_at), col(VoiceCall.id))
        )
        async with self._read() as session:
            return [VoiceCallRecord.from_row(row) for row in await session.exec(statement)]

    @completes
    async def voice_turn_put(
        self,
        conversation_id: str,
        *,
        call_id: str,
        round: str,
        role: str,
        content: str,
        now: datetime,
        interrupted: bool = False,
        keep_interrupted: bool = False,
    ) -> None:
        """Stores the round's turn of `role`, replacing the one stored before (a retried round);
        the conversation is active now. LookupError if the conversation does not exist.

        A replaced turn keeps its place in the history (its id) and its first time.
        `keep_interrupted`: a stored turn marked interrupted (what the cloud said was heard)
        stays as it is.
        """
        now = require_aware(now, "now")
        turn = {
            "conversation_id": conversation_id,
            "role": role,
            "content": content,
            "created_at": now,
            "source": TurnSource.VOICE.value,
            "voice_call_id": call_id,
            "voice_round": round,
            "interrupted": interrupted,
        }
        async with self._write() as session:
            touched = await session.exec(
                update(Conversation)
                .where(col(Conversation.id) == conversation_id)
                .values(last_activity_at=now)
            )
            if touched.rowcount == 0:
                raise LookupError(f"conversation {conversation_id} not found")
            await session.exec(
                _upsert(self._engine.dialect.name, turn, keep_interrupted=keep_interrupted)
            )
            await session.commit()

    @completes
    async def voice_turn_trim(
        self, call_id: str, round: str, *, text: str | None, now: datetime
    ) -> bool:
        """The round's answer was cut short: marked interrupted and, when `text` (what was
        spoken) is given, trimmed to it. False when the round has no stored answer.

        The conversation counts as active at `now`, unless it was active later already.
        """
        now = require_aware(now, "now")
        answer = (
            col(Message.voice_call_id) == call_id,
            col(Message.voice_round) == round,
            col(Message.role) == "assistant",
        )
        values: dict[str, Any] = {"interrupted": True}
        if text is not None:
            values["content"] = text
        async with self._write() as session:
            trimmed = await session.exec(update(Message).where(*answer).values(values))
            if trimmed.rowcount == 0:
                return False
            of_answer = select(Message.conversation_id).where(*answer).scalar_subquery()
            await session.exec(
                update(Conversation)
                .where(
                    col(Conversation.id) == of_answer,
                    col(Conversation.last_activity_at) < now,
                )
                .values(last_activity_at=now)
            )
            await session.commit()
            return True

    async def voice_turn_last(self, call_id: str, role: str) -> MessageRecord | None:
        """The call's latest stored turn of `role`."""
        statement = (
            select(Message)
            .where(Message.voice_call_id == call_id, Message.role == role)
            .order_by(col(Message.id).desc())
            .limit(1)
        )
        async with self._read() as session:
            row = (await session.exec(statement)).first()
            return None if row is None else MessageRecord.from_row(row)

    async def voice_turn_get(self, call_id: str, round: str, role: str) -> MessageRecord | None:
        """The call's stored turn of `role` in `round`."""
        statement = select(Message).where(
            Message.voice_call_id == call_id, Message.voice_round == round, Message.role == role
        )
        async with self._read() as session:
            row = (await session.exec(statement)).first()
            return None if row is None else MessageRecord.from_row(row)

    async def voice_turns_of_conversation(
        self, conversation_id: str, limit: int
    ) -> list[MessageRecord]:
        """The conversation's last `limit` voice turns, of every call, oldest first."""
        statement = (
            select(Message)
            .where(
                Message.conversation_id == conversation_id,
                col(Message.voice_call_id).is_not(None),
            )
            .order_by(col(Message.id).desc())
            .limit(limit)
        )
        async with self._read() as session:
            rows = list(await session.exec(statement))
        return [MessageRecord.from_row(row) for row in reversed(rows)]

    async def voice_rounds(self, call_id: str) -> set[tuple[str, str]]:
        """The (round, role) pairs stored for the call."""
        statement = select(Message.voice_round, Message.role).where(
            Message.voice_call_id == call_id, col(Message.voice_round).is_not(None)
        )
        async with self._read() as session:
            return {(str(round_), role) for round_, role in await session.exec(statement)}

    async def conversation_for_user(
        self,
        channel_id: str,
        *,
        platform: str,
        platform_user_id: str,
        idle_reset: timedelta,
        now: datetime,
    ) -> tuple[ConversationRecord, str]:
        """The conversation a call of this user joins, and the internal user id.

        The user's direct chat on the channel (the latest active, the same conversation their
        text turns go to), a fresh one in its place when it was idle longer than `idle_reset`;
        with no open direct chat, one keyed by the platform user id, for the user known under
        any tenant of the platform or else created (tenant "", no display name).
        """
        now = require_aware(now, "now")
        chats = (
            select(Conversation)
            .join(PlatformIdentity, col(PlatformIdentity.user_id) == col(Conversation.user_id))
            .where(
                Conversation.channel_id == channel_id,
                col(Conversation.closed_at).is_(None),
                col(Conversation.key).startswith(DIRECT_PREFIX, autoescape=True),
                PlatformIdentity.platform == platform,
                PlatformIdentity.platform_user_id == platform_user_id,
            )
            .order_by(col(Conversation.last_activity_at).desc(), col(Conversation.id))
            .limit(1)
        )
        known = (
            select(PlatformIdentity.user_id)
            .where(
                PlatformIdentity.platform == platform,
                PlatformIdentity.platform_user_id == platform_user_id,
            )
            .order_by(col(PlatformIdentity.id))
            .limit(1)
        )
        async with self._read() as session:
            chat = (await session.exec(chats)).first()
            user_id = None if chat is not None else (await session.exec(known)).first()
        if chat is not None:
            key, user_id = chat.key, chat.user_id
        else:
            key = f"{DIRECT_PREFIX}{platform_user_id}"
            if user_id is None:
                user_id = await self.resolve_user(platform, "", platform_user_id, "")
        # Closes a stale one and opens its successor, or finds what a concurrent caller opened.
        record, _ = await self._current(channel_id, key, user_id, idle_reset=idle_reset, now=now)
        return record, record.user_id
