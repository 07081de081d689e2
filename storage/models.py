"""SQLModel tables: channel desired state, users, identities, conversations, messages, journal,
voice calls."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

# Lengths are generous bounds for platform ids (DingTalk msgIds and Feishu open_ids are < 64 chars,
# Feishu message ids "om_..." about 40); PostgreSQL enforces them, SQLite does not.
ID_LENGTH = 32  # uuid4().hex
NAME_LENGTH = 128
PLATFORM_ID_LENGTH = 255
EMAIL_LENGTH = 320  # RFC 5321: 64 for the local part, @, 255 for the domain


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetime on every backend; SQLite stores naive UTC text."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Rejects naive datetimes, normalises to UTC (naive for SQLite, which keeps no zone)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text, so every stored value must share one format.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Returns an aware UTC datetime whatever the driver handed back."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Named constraints keep later SQLite batch migrations (which rebuild tables) deterministic.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class StorageModel(SQLModel, registry=registry(metadata=metadata)):
    """Base of channeld's tables, on a metadata of their own rather than SQLModel's global one."""


def _when() -> Any:
    return Field(sa_type=UtcDateTime, nullable=False)


class Channel(StorageModel, table=True):
    """Desired state of one channel; the manager reconciles running providers from these rows."""

    __tablename__ = "channel"

    id: str = Field(primary_key=True, sa_type=sa.String(NAME_LENGTH))
    type: str = Field(sa_type=sa.String(NAME_LENGTH))
    agent: str = Field(sa_type=sa.String(NAME_LENGTH))
    enabled: bool
    source: str = Field(sa_type=sa.String(16))
    spec: dict[str, Any] = Field(sa_type=sa.JSON, nullable=False)
    version: int
    created_at: datetime = _when()
    updated_at: datetime = _when()


class UserAccount(StorageModel, table=True):
    """An internal user; "user" itself is reserved in PostgreSQL."""

    __tablename__ = "user_account"
    __table_args__ = (
        # Unique indexes, not constraints: SQLite adds an index in place, while a constraint
        # means rebuilding the table, whose DROP would cascade to every identity and
        # conversation. NULLs are distinct on both backends: only real values are unique.
        sa.Index("uq_user_account_email", "email", unique=True),
        sa.Index("uq_user_account_directory_id", "directory_id", unique=True),
    )

    id: str = Field(primary_key=True, sa_type=sa.String(ID_LENGTH))
    display_name: str = Field(sa_type=sa.String(PLATFORM_ID_LENGTH))
    created_at: datetime = _when()
    updated_at: datetime = _when()
    email: str | None = Field(default=None, sa_type=sa.String(EMAIL_LENGTH))  # lower-cased
    groups: list[str] = Field(
        default_factory=list,
        sa_type=sa.JSON,
        nullable=False,
        sa_column_kwargs={"server_default": "[]"},
    )
    # "auto" | "file" | "http" | "ldap" | a platform's name: who vouched for this person
    auth_source: str = Field(
        default="auto", sa_type=sa.String(64), sa_column_kwargs={"server_default": "auto"}
    )
    # what the directory calls the person ("file:..", "http:..", "ldap:" + DN); None for auto users
    directory_id: str | None = Field(default=None, sa_type=sa.String(PLATFORM_ID_LENGTH))
    blocked: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    blocked_notice_at: datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    last_seen_at: datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)


class PlatformIdentity(StorageModel, table=True):
    """Maps an IM account (platform, tenant, platform user id) to an internal user."""

    __tablename__ = "platform_identity"
    __table_args__ = (
        sa.UniqueConstraint(
            "platform", "tenant", "platform_user_id", name="uq_platform_identity_account"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(sa_type=sa.String(NAME_LENGTH))
    tenant: str = Field(sa_type=sa.String(PLATFORM_ID_LENGTH))
    platform_user_id: str = Field(sa_type=sa.String(PLATFORM_ID_LENGTH))
    user_id: str = Field(
        sa_type=sa.String(ID_LENGTH),
        foreign_key="user_account.id",
        ondelete="CASCADE",
        index=True,
    )
    display_name: str = Field(sa_type=sa.String(PLATFORM_ID_LENGTH))
    created_at: datetime = _when()
    updated_at: datetime = _when()


class Conversation(StorageModel, table=True):
    """A run of messages between one conversation key and an agent; closed by /new or idleness."""

    __tablename__ = "conversation"
    __table_args__ = (
        # At most one open conversation per key, so concurrent openers collide instead of forking.
        sa.Index(
            "uq_conversation_open_key",
            "channel_id",
            "key",
            unique=True,
            sqlite_where=sa.text("closed_at IS NULL"),
            postgresql_where=sa.text("closed_at IS NULL"),
        ),
        sa.Index("ix_conversation_last_activity_at", "last_activity_at"),
    )

    id: str = Field(primary_key=True, sa_type=sa.String(ID_LENGTH))
    # No foreign key to channel: history outlives a deleted channel.
    channel_id: str = Field(sa_type=sa.String(NAME_LENGTH))
    key: str = Field(sa_type=sa.String(512))
    user_id: str = Field(
        sa_type=sa.String(ID_LENGTH), foreign_key="user_account.id", ondelete="CASCADE", index=True
    )
    created_at: datetime = _when()
    last_activity_at: datetime = _when()
    closed_at: datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)


class InboundJournal(StorageModel, table=True):
    """One inbound platform message, written before the platform is acked."""

    __tablename__ = "inbound_journal"
    __table_args__ = (
        sa.UniqueConstraint(
            "channel_id", "platform_message_id", name="uq_inbound_journal_platform_message"
        ),
        # NULL frame ids are distinct from each other on SQLite and PostgreSQL alike.
        sa.UniqueConstraint("channel_id", "frame_id", name="uq_inbound_journal_frame"),
        sa.Index("ix_inbound_journal_state", "state", "channel_id"),
        sa.Index("ix_inbound_journal_updated_at", "updated_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(sa_type=sa.String(NAME_LENGTH))
    platform_message_id: str = Field(sa_type=sa.String(PLATFORM_ID_LENGTH))
    frame_id: str | None = Field(default=None, sa_type=sa.String(PLATFORM_ID_LENGTH))
    state: str = Field(sa_type=sa.String(16))
    payload: str = Field(sa_type=sa.Text)
    conversation_id: str | None = Field(
        default=None,
        sa_type=sa.String(ID_LENGTH),
        foreign_key="conversation.id",
        ondelete="SET NULL",
        index=True,  # deleting a conversation nulls its rows' links (retention)
    )
    card_id: str | None = Field(default=None, sa_type=sa.String(PLATFORM_ID_LENGTH))
    delivered_text: str = Field(default="", sa_type=sa.Text)
    error: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _when()
    updated_at: datetime = _when()


class VoiceCall(StorageModel, table=True):
    """A voice call of a cloud voice agent whose LLM is channeld, joined to a conversation."""

    __tablename__ = "voice_call"
    __table_args__ = (
        sa.Index("ix_voice_call_instance", "provider", "instance_id"),
        # The calls still running are few among every call kept: their own small index.
        sa.Index(
            "ix_voice_call_active",
            "channel_id",
            sqlite_where=sa.text("ended_at IS NULL"),
            postgresql_where=sa.text("ended_at IS NULL"),
        ),
    )

    id: str = Field(primary_key=True, sa_type=sa.String(ID_LENGTH))
    channel_id: str = Field(sa_type=sa.String(NAME_LENGTH))
    provider: str = Field(sa_type=sa.String(16))
    conversation_id: str = Field(
        sa_type=sa.String(ID_LENGTH), foreign_key="conversation.id", ondelete="CASCADE", index=True
    )
    user_id: str = Field(
        sa_type=sa.String(ID_LENGTH), foreign_key="user_account.id", ondelete="CASCADE"
    )
    platform_user_id: str = Field(sa_type=sa.String(PLATFORM_ID_LENGTH))
    # sha256 hex of the per-call secret; the secret itself is never stored
    secret_hash: str = Field(sa_type=sa.String(64), unique=True)
    instance_id: str | None = Field(default=None, sa_type=sa.String(PLATFORM_ID_LENGTH))
    details: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)
    started_at: datetime = _when()
    expires_at: datetime = _when()
    ended_at: datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    end_reason: str | None = Field(default=None, sa_type=sa.String(32))


class Message(StorageModel, table=True):
    """One turn of a conversation, user or assistant, typed in a chat or spoken in a call."""

    __tablename__ = "message"
    __table_args__ = (
        sa.Index("ix_message_conversation", "conversation_id", "id"),
        # A retried voice round replaces its turns. NULLs are distinct on both backends, so text
        # turns (no call, no round) never collide. Its index also serves the call's lookups and
        # the foreign key's SET NULL: no second index on voice_call_id alone.
        sa.UniqueConstraint("voice_call_id", "voice_round", "role", name="uq_message_voice_turn"),
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(
        sa_type=sa.String(ID_LENGTH), foreign_key="conversation.id", ondelete="CASCADE"
    )
    role: str = Field(sa_type=sa.String(16))
    content: str = Field(sa_type=sa.Text)
    # Pruning the journal keeps the history, only the link goes.
    journal_id: int | None = Field(
        default=None, foreign_key="inbound_journal.id", ondelete="SET NULL", index=True
    )
    created_at: datetime = _when()
    source: str = Field(
        default="text", sa_type=sa.String(16), sa_column_kwargs={"server_default": "text"}
    )
    voice_call_id: str | None = Field(
        default=None, sa_type=sa.String(ID_LENGTH), foreign_key="voice_call.id", ondelete="SET NULL"
    )
    voice_round: str | None = Field(default=None, sa_type=sa.String(64))  # the cloud's round id
    interrupted: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
