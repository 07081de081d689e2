"""Index the journal's conversation link, so deleting old conversations does not scan the journal.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Applies this revision."""
    # Every deleted conversation sets its journal rows' link to NULL (ON DELETE SET NULL);
    # without this index each one is a full scan of the journal.
    op.create_index("ix_inbound_journal_conversation_id", "inbound_journal", ["conversation_id"])


def downgrade() -> None:
    """Reverts this revision."""
    op.drop_index("ix_inbound_journal_conversation_id", table_name="inbound_journal")
