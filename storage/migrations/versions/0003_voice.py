"""Voice calls, and messages that know whether they were typed or spoken.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Revisions spell their types out instead of importing storage.models, which keeps changing.
_ID = sa.String(length=32)
_NAME = sa.String(length=128)
_PLATFORM_ID = sa.String(length=255)
_ACTIVE = sa.text("ended_at IS NULL")


def _when(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Applies this revision."""
    op.create_table(
        "voice_call",
        sa.Column("id", _ID, nullable=False),
        sa.Column("channel_id", _NAME, nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("conversation_id", _ID, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("platform_user_id", _PLATFORM_ID, nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("instance_id", _PLATFORM_ID, nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        _when("started_at"),
        _when("expires_at"),
        _when("ended_at", nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_voice_call"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
            name="fk_voice_call_conversation_id_conversation",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name="fk_voice_call_user_id_user_account",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("secret_hash", name="uq_voice_call_secret_hash"),
    )
    op.create_index("ix_voice_call_conversation_id", "voice_call", ["conversation_id"])
    op.create_index("ix_voice_call_instance", "voice_call", ["provider", "instance_id"])
    op.create_index(
        "ix_voice_call_active",
        "voice_call",
        ["channel_id"],
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )
    # SQLite adds a foreign key or a unique constraint only by rebuilding the table (batch mode);
    # PostgreSQL alters it in place. The server defaults give existing rows their values.
    with op.batch_alter_table("message") as batch:
        batch.add_column(
            sa.Column("source", sa.String(length=16), nullable=False, server_default="text")
        )
        batch.add_column(sa.Column("voice_call_id", _ID, nullable=True))
        batch.add_column(sa.Column("voice_round", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("interrupted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_foreign_key(
            "fk_message_voice_call_id_voice_call",
            "voice_call",
            ["voice_call_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_unique_constraint(
            "uq_message_voice_turn", ["voice_call_id", "voice_round", "role"]
        )


def downgrade() -> None:
    """Reverts this revision; voice turns stay in their conversations as plain turns."""
    with op.batch_alter_table("message") as batch:
        batch.drop_constraint("uq_message_voice_turn", type_="unique")
        batch.drop_constraint("fk_message_voice_call_id_voice_call", type_="foreignkey")
        batch.drop_column("interrupted")
        batch.drop_column("voice_round")
        batch.drop_column("voice_call_id")
        batch.drop_column("source")
    op.drop_table("voice_call")
