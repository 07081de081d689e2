"""Retention: finished journal rows and idle conversations are deleted once past their age."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage.base import Clock, utc_now
from storage.repository import Store

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 3600.0  # seconds between runs; rows a day past their age are as good as gone
# Rows per transaction: a few milliseconds of SQLite's single write lock, so an inbound
# message's journal write (before its ack) never waits behind a long delete.
PRUNE_BATCH = 500
# Between batches: other processes on a SQLite file wait in its busy handler, which sleeps in
# growing steps; a loop that takes the lock straight back would starve them.
BATCH_PAUSE = 0.05  # seconds


@dataclass(frozen=True, slots=True)
class PruneReport:
    """Rows deleted by one run."""

    journal: int = 0
    conversations: int = 0


class Pruner:
    """Prunes at start and then every `interval` seconds, in an owned task; 0 days keeps all."""

    def __init__(
        self,
        store: Store,
        *,
        journal_days: int,
        conversation_days: int,
        on_pruned: Callable[[str, int], None] = lambda _table, _count: None,
        interval: float = PRUNE_INTERVAL,
        batch: int = PRUNE_BATCH,
        pause: float = BATCH_PAUSE,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._journal_days = journal_days
        self._conversation_days = conversation_days
        self._on_pruned = on_pruned
        self._interval = interval
        self._batch = batch
        self._pause = pause
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether anything is ever deleted."""
        return self._journal_days > 0 or self._conversation_days > 0

    def start(self) -> None:
        """Begin the schedule (first run now); nothing to do when everything is kept."""
        if not self.enabled or self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        """Cancel the schedule, a run in progress included (each batch is its own commit)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def prune(self) -> PruneReport:
        """One run: every batch of rows past its age, journal first."""
        now = self._clock()
        journal = conversations = 0
        if self._journal_days > 0:
            cutoff = now - timedelta(days=self._journal_days)
            journal = await self._drain("journal", self._store.journal_prune, cutoff)
        if self._conversation_days > 0:
            cutoff = now - timedelta(days=self._conversation_days)
            conversations = await self._drain(
                "conversation", self._store.conversations_prune, cutoff
            )
        return PruneReport(journal=journal, conversations=conversations)

    async def _drain(
        self, table: str, prune: Callable[..., Awaitable[int]], cutoff: datetime
    ) -> int:
        total = 0
        while True:
            deleted = await prune(cutoff, limit=self._batch)
            total += deleted
            if deleted:
                self._on_pruned(table, deleted)
            if deleted < self._batch:
                return total
            await asyncio.sleep(self._pause)

    async def _run(self) -> None:
        while True:
            try:
                report = await self.prune()
            except Exception as exc:  # noqa: BLE001 - a busy or unreachable database; next run retries
                log.warning("retention: pruning failed, next try in %.0fs: %s", self._interval, exc)
            else:
                self._log(report)
            await asyncio.sleep(self._interval)

    def _log(self, report: PruneReport) -> None:
        parts = []
        if self._journal_days > 0:
            parts.append(
                f"{report.journal} journal row(s) finished over {self._journal_days} day(s) ago"
            )
        if self._conversation_days > 0:
            parts.append(
                f"{report.conversations} conversation(s) idle over {self._conversation_days} day(s)"
            )
        level = logging.INFO if report.journal or report.conversations else logging.DEBUG
        log.log(level, "retention: deleted %s", ", ".join(parts))
