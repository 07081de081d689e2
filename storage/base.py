"""What every part of the Store shares: the engine, short sessions, the clock."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.engine import WRITE_OPTION
from storage.writers import WriteQueue

Clock = Callable[[], datetime]
P = ParamSpec("P")
R = TypeVar("R")

# A read-then-insert that loses a race on PostgreSQL hits a unique constraint; re-running the
# transaction then finds the winner's row. Three rounds cover any realistic pile-up.
CONFLICT_ATTEMPTS = 3


def completes(method: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """A write that runs to its end (commit or rollback) even when its caller is cancelled.

    Cancelled mid-statement, a transaction leaves SQLAlchemy's aiosqlite connection to be thrown
    away uncleanly ("Exception during reset"), and until the collector closes it, it may hold
    SQLite's write lock: every other writer then waits out busy_timeout and fails (a shutdown that
    cut an answer short used to end that way). The caller's cancellation is raised once the write
    ended; a write takes milliseconds, bounded by busy_timeout.
    """

    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        write = asyncio.ensure_future(method(*args, **kwargs))
        try:
            return await asyncio.shield(write)
        except asyncio.CancelledError:
            await asyncio.wait({write})
            if not write.cancelled():
                write.exception()  # retrieved: the caller's cancellation is what it sees
            raise

    return run


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def require_aware(value: datetime, name: str) -> datetime:
    """Rejects naive datetimes: the store keeps UTC and must not guess a zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")
    return value.astimezone(UTC)


class StoreBase:
    """Engine, session factories and clock shared by the Store's repositories."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        # Same pool; on SQLite its transactions BEGIN IMMEDIATE (see storage.engine).
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self._clock = clock
        # SQLite has one writer at a time. Our own writers queue here, in order, instead of in
        # SQLite's busy handler, which sleeps in growing steps (up to 100 ms) between retries:
        # under load that sleep, not the write, was most of an ack's latency (docs/bench).
        # Other processes still meet busy_timeout.
        # The journal insert and the stored answer are urgent: an ack and a final text wait on them.
        self._write_lock = WriteQueue() if engine.dialect.name == "sqlite" else None
        # (platform, tenant, platform user id) -> (user id, display name) of accounts seen lately:
        # a returning user costs no transaction (users are never deleted, ids never change)
        self._known_users: OrderedDict[tuple[str, str, str], tuple[str, str]] = OrderedDict()

    @property
    def engine(self) -> AsyncEngine:
        """The underlying async engine."""
        return self._engine

    def _now(self) -> datetime:
        return require_aware(self._clock(), "clock()")

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        async with AsyncSession(self._engine, expire_on_commit=False) as session:
            yield session

    @asynccontextmanager
    async def _write(self, *, urgent: bool = False) -> AsyncIterator[AsyncSession]:
        # Leaving without commit rolls back: a body commits only what it finished.
        turn = (
            self._write_lock.turn(urgent=urgent) if self._write_lock else contextlib.nullcontext()
        )
        async with turn, AsyncSession(self._write_engine, expire_on_commit=False) as session:
            yield session
