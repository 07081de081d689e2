"""What every platform's `convert.py` shares in turning a platform message into `InboundMessage`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from channels.model import Attachment, describe_attachment

_SPACES = re.compile(r"[ \t]{2,}")


def timestamp_ms(value: Any) -> datetime:
    """A platform's milliseconds since the epoch (number or string); now when missing or absurd."""
    try:
        return datetime.fromtimestamp(int(str(value)) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return datetime.now(UTC)


def squeeze_spaces(text: str) -> str:
    """Runs of spaces and tabs (left where a mention was taken out) become one; ends trimmed."""
    return _SPACES.sub(" ", text).strip()


def with_notes(text: str, attachments: Iterable[Attachment]) -> str:
    """`text` and a line for each attachment, so the agent knows what it was sent but cannot see."""
    notes = [describe_attachment(a) for a in attachments]
    return "\n".join(t for t in [text, *notes] if t)
