"""Users as people: e-mail, groups, where they came from, their directory entry, blocking.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Revisions spell their types out instead of importing storage.models, which keeps changing.
_PLATFORM_ID = sa.String(length=255)


def _when(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    """Applies this revision; existing users become auto users with no e-mail and no groups."""
    # No batch mode: rebuilding user_account on SQLite drops the old table, and with foreign
    # keys on that DROP cascades to every identity, conversation and call. Adding columns and
    # unique indexes works in place on both backends; the server defaults fill existing rows.
    op.add_column("user_account", sa.Column("email", sa.String(length=320), nullable=True))
    op.add_column(
        "user_account", sa.Column("groups", sa.JSON(), nullable=False, server_default="[]")
    )
    op.add_column(
        "user_account",
        sa.Column("auth_source", sa.String(length=64), nullable=False, server_default="auto"),
    )
    op.add_column("user_account", sa.Column("directory_id", _PLATFORM_ID, nullable=True))
    op.add_column(
        "user_account",
        sa.Column("blocked", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("user_account", _when("blocked_notice_at"))
    op.add_column("user_account", _when("last_seen_at"))
    op.create_index("uq_user_account_email", "user_account", ["email"], unique=True)
    op.create_index("uq_user_account_directory_id", "user_account", ["directory_id"], unique=True)


def downgrade() -> None:
    """Reverts this revision; users and their identities stay, as anonymous accounts."""
    # SQLite (3.35+) drops a column in place once no index uses it: no rebuild here either.
    op.drop_index("uq_user_account_directory_id", "user_account")
    op.drop_index("uq_user_account_email", "user_account")
    for column in (
        "last_seen_at",
        "blocked_notice_at",
        "blocked",
        "directory_id",
        "auth_source",
        "groups",
        "email",
    ):
        op.drop_column("user_account", column)
