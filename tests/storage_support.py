"""Test databases for the store: a SQLite file, or this run's own PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import URL, Connection, make_url

from storage.engine import WRITE_OPTION, alembic_config, make_engine

# The maintenance database of a server where the test user may CREATE DATABASE.
POSTGRES_ADMIN_URL = os.environ.get(
    "CHANNELD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
POSTGRES_CONNECT_TIMEOUT = 5.0  # seconds


REPO_ROOT = Path(__file__).resolve().parents[1]
_MIGRATE_ON_GO = """
import asyncio, sys
from storage import migrate
print("ready", flush=True)
sys.stdin.readline()
asyncio.run(migrate(sys.argv[1]))
"""


async def migrate_in_processes(url: str, count: int) -> list[tuple[int | None, bytes]]:
    """Migrates from `count` processes at once, as replicas starting together would.

    Each process imports first and migrates on "go", so the migrations really overlap.
    Returns each process's exit code and stderr.
    """
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _MIGRATE_ON_GO,
            url,
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(count)
    ]
    try:
        async with asyncio.timeout(30):
            for process in processes:
                if process.stdout is None or await process.stdout.readline() != b"ready\n":
                    raise RuntimeError("migration process did not start")
            outputs = await asyncio.gather(*(p.communicate(b"go\n") for p in processes))
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    return [(p.returncode, err) for p, (_, err) in zip(processes, outputs, strict=True)]


def sqlite_url(path: Path) -> str:
    """An aiosqlite URL for a database file."""
    return f"sqlite+aiosqlite:///{path}"


def _dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresDatabase:
    """One database per test run (a random name, so runs never meet), reset between tests.

    Creating a database per test costs about a second on a busy CI disk; resetting costs little.
    """

    def __init__(self, admin_url: str = POSTGRES_ADMIN_URL) -> None:
        self._admin = make_url(admin_url)
        self._where = f"{self._admin.host or 'localhost'}:{self._admin.port or 5432}"
        self._name = f"channeld_test_{secrets.token_hex(6)}"
        self._created = False
        self._unreachable: str | None = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of this run's database."""
        url = self._admin.set(drivername="postgresql+asyncpg", database=self._name)
        return url.render_as_string(hide_password=False)

    async def empty(self) -> str:
        """The database with no tables at all, as before the first migration."""
        await self._reset("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        return self.url

    async def clean(self) -> str:
        """The database with its tables (if migrated) but no rows."""
        await self._reset(
            """
            DO $$ DECLARE tables text;
            BEGIN
                SELECT string_agg(quote_ident(tablename), ', ') INTO tables
                FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version';
                IF tables IS NOT NULL THEN
                    EXECUTE 'TRUNCATE ' || tables || ' RESTART IDENTITY CASCADE';
                END IF;
            END $$
            """
        )
        return self.url

    def drop(self) -> None:
        """Drops the run's database; called once, with no event loop running."""
        if self._created:
            asyncio.run(self._admin_execute(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)'))

    async def _reset(self, sql: str) -> None:
        if self._unreachable is not None:
            pytest.skip(f"PostgreSQL not reachable at {self._where}: {self._unreachable}")
        if not self._created:
            try:
                await self._admin_execute(f'CREATE DATABASE "{self._name}"')
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                self._unreachable = f"{type(exc).__name__}: {exc}"
                pytest.skip(f"PostgreSQL not reachable at {self._where}: {self._unreachable}")
            self._created = True
        conn = await asyncpg.connect(
            _dsn(self._admin.set(database=self._name)), timeout=POSTGRES_CONNECT_TIMEOUT
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def _admin_execute(self, sql: str) -> None:
        conn = await asyncpg.connect(_dsn(self._admin), timeout=POSTGRES_CONNECT_TIMEOUT)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


@dataclass
class FakeClock:
    """A clock the test moves by hand."""

    now: datetime = field(default_factory=lambda: datetime(2025, 3, 1, 8, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        """Moves the clock forward and returns the new time."""
        self.now += delta
        return self.now


class WriteLock:
    """Another process's transaction: BEGIN IMMEDIATE on the file, held until released."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._taken = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._hold, name="sqlite-writer", daemon=True)

    def _hold(self) -> None:
        conn = sqlite3.connect(self._path, timeout=5, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._taken.set()
            self._release.wait(30)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    async def take(self) -> None:
        self._thread.start()
        assert await asyncio.to_thread(self._taken.wait, 10)

    async def release(self) -> None:
        self._release.set()
        if self._thread.ident is not None:
            await asyncio.to_thread(self._thread.join, 10)


def _alembic_on(connection: Connection, action: str, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, action)(config, revision)


async def _alembic_async(url: str, action: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.execution_options(**{WRITE_OPTION: True}).connect() as conn:
            await conn.run_sync(_alembic_on, action, revision)
            await conn.commit()
    finally:
        await engine.dispose()


async def alembic_step(url: str, action: str, revision: str) -> None:
    """`alembic upgrade|downgrade REVISION` on `url`, the way the daemon migrates (write lock).

    Alembic's Python work between statements would stall the test's loop (as in storage.engine):
    it runs on a loop of its own in a worker thread.
    """
    await asyncio.to_thread(asyncio.run, _alembic_async(url, action, revision))
