"""Recovery after a restart leaves the rows of a channel that is not running for its next start."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from channels.conversations import AnswerSlots
from channels.handler import MessageHandler
from channels.live import ChannelRuntime
from channels.recovery import recover
from storage import JournalState, Store
from tests.storage_support import sqlite_url


def no_runtime(_channel_id: str) -> ChannelRuntime | None:
    """No channel is running."""
    return None


async def test_rows_of_a_stopped_channel_wait_and_are_counted_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="channels.recovery")
    store = await Store.open(sqlite_url(tmp_path / "channeld.db"))
    handler = MessageHandler(store, slots=AnswerSlots(1))
    try:
        entry_id = await store.journal_accept("stopped", "m1", None, "{}")
        report = await recover(
            store,
            handler,
            no_runtime,
            await store.journal_unfinished(),
            freshness=timedelta(minutes=5),
            now=datetime.now(UTC),
        )
        assert (report.skipped, report.resumed, report.told_lost) == (1, 0, 0)
        assert "1 waiting for their channel to start" in caplog.text
        (left,) = await store.journal_unfinished()  # untouched, for the channel's next start
        assert (left.id, left.state) == (entry_id, JournalState.RECEIVED)
    finally:
        await handler.close()
        await store.close()
