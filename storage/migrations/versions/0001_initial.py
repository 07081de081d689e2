"""Initial schema: channels, users, identities, conversations, messages, inbound journal.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Revisions spell their types out instead of importing storage.models, which keeps changing.
_ID = sa.String(length=32)
_NAME = sa.String(length=128)
_PLATFORM_ID = sa.String(length=255)


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Applies this revision."""
    op.create_table(
        "channel",
        sa.Column("id", _NAME, nullable=False),
        sa.Column("type", _NAME, nullable=False),
        sa.Column("agent", _NAME, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_channel"),
    )
    op.create_table(
        "user_account",
        sa.Column("id", _ID, nullable=False),
        sa.Column("display_name", _PLATFORM_ID, nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_user_account"),
    )
    op.create_table(
        "platform_identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", _NAME, nullable=False),
        sa.Column("tenant", _PLATFORM_ID, nullable=False),
        sa.Column("platform_user_id", _PLATFORM_ID, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("display_name", _PLATFORM_ID, nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_platform_identity"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name="fk_platform_identity_user_id_user_account",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "platform", "tenant", "platform_user_id", name="uq_platform_identity_account"
        ),
    )
    op.create_index("ix_platform_identity_user_id", "platform_identity", ["user_id"])
    op.create_table(
        "conversation",
        sa.Column("id", _ID, nullable=False),
        sa.Column("channel_id", _NAME, nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        _when("created_at"),
        _when("last_activity_at"),
        _when("closed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_conversation"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name="fk_conversation_user_id_user_account",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_conversation_user_id", "conversation", ["user_id"])
    op.create_index("ix_conversation_last_activity_at", "conversation", ["last_activity_at"])
    op.create_index(
        "uq_conversation_open_key",
        "conversation",
        ["channel_id", "key"],
        unique=True,
        sqlite_where=sa.text("closed_at IS NULL"),
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    op.create_table(
        "inbound_journal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", _NAME, nullable=False),
        sa.Column("platform_message_id", _PLATFORM_ID, nullable=False),
        sa.Column("frame_id", _PLATFORM_ID, nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("conversation_id", _ID, nullable=True),
        sa.Column("card_id", _PLATFORM_ID, nullable=True),
        sa.Column("delivered_text", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _when("created_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_journal"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
            name="fk_inbound_journal_conversation_id_conversation",
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint(
            "channel_id", "platform_message_id", name="uq_inbound_journal_platform_message"
        ),
        sa.UniqueConstraint("channel_id", "frame_id", name="uq_inbound_journal_frame"),
    )
    op.create_index("ix_inbound_journal_state", "inbound_journal", ["state", "channel_id"])
    op.create_index("ix_inbound_journal_updated_at", "inbound_journal", ["updated_at"])
    op.create_table(
        "message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", _ID, nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("journal_id", sa.Integer(), nullable=True),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_message"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
            name="fk_message_conversation_id_conversation",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["journal_id"],
            ["inbound_journal.id"],
            name="fk_message_journal_id_inbound_journal",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_message_conversation", "message", ["conversation_id", "id"])
    op.create_index("ix_message_journal_id", "message", ["journal_id"])


def downgrade() -> None:
    """Reverts this revision."""
    for table in (
        "message",
        "inbound_journal",
        "conversation",
        "platform_identity",
        "user_account",
        "channel",
    ):
        op.drop_table(table)
