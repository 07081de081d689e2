"""Helpers every provider uses for the task that reads its platform session."""

from __future__ import annotations

import asyncio
import contextlib

from common.errors import TransientError


async def watch_reader(reader: asyncio.Task[None] | None, what: str) -> None:
    """Wait for a session's reader: return or raise as it did; its cancellation by someone
    else (the provider closing the session) is a TransientError, ours propagates."""
    if reader is None:
        raise TransientError("no session")
    try:
        await asyncio.shield(reader)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if reader.cancelled() and not (task and task.cancelling()):
            raise TransientError(f"{what} was cancelled") from None
        raise


async def cancel_reader(reader: asyncio.Task[None] | None) -> None:
    """Cancel a reader and wait for it; whatever it raised is already reported elsewhere."""
    if reader is not None:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
