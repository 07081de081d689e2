"""Async engine creation (SQLite or PostgreSQL) and the Alembic migration runner."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import aiosqlite
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
PRIVATE_DIR_MODE = 0o700  # the state directory: the database and the secret key
PRIVATE_FILE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
SQLITE_BUSY_TIMEOUT_MS = 5000
MIGRATION_BUSY_TIMEOUT_MS = 120_000  # a replica waits this long for another's migration
WAL_SWITCH_RETRY_DELAY = 0.05  # seconds
# Execution option that makes a SQLite transaction take the write lock at BEGIN (_begin_sqlite).
WRITE_OPTION = "channeld_write"

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def parse_url(url: str | URL) -> URL:
    """Parses a database URL and pins it to the async driver of its backend."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
            "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://..."
        )
    return parsed.set(drivername=driver)


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL, None for in-memory databases and other backends."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def private_directory(path: Path) -> None:
    """Creates `path` mode 0700; an existing one open to others is tightened (or reported)."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    _restrict(path, PRIVATE_DIR_MODE)


def _restrict(path: Path, mode: int) -> None:
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return  # no such companion, or SQLite removed it meanwhile
    if not current & 0o077:
        return
    try:
        path.chmod(mode)
    except FileNotFoundError:
        return
    except PermissionError:
        log.warning("%s is mode %04o, open to other users, and not ours to change", path, current)
        return
    log.warning("%s was mode %04o, open to other users; changed to %04o", path, current, mode)


def _private_sqlite_file(path: Path) -> None:
    # Created 0600 whatever the umask. SQLite gives a new -wal, -shm or -journal file the mode of
    # its database file (os_unix.c, findCreateFileMode and robust_open's fchmod), so the
    # companions it creates later, lazily, are private too; older ones are tightened here.
    # An existing directory is left as it is: database_url may point into a shared one.
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE))
    for file in (path, *(path.with_name(path.name + s) for s in SQLITE_COMPANIONS)):
        _restrict(file, PRIVATE_FILE_MODE)


def make_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """Creates an async engine with channeld's per-backend connection settings."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        event.listen(engine.sync_engine, "begin", _begin_sqlite)
        return engine
    kwargs.setdefault("pool_pre_ping", True)  # survive a PostgreSQL restart or failover
    connect_args = kwargs.setdefault("connect_args", {})
    # asyncpg waits 60 s to connect and forever for a query by default; /readyz and the
    # journal (written before the platform ack) need a bounded answer.
    connect_args.setdefault("timeout", 10)
    connect_args.setdefault("command_timeout", 30)
    return create_async_engine(parsed, **kwargs)


def _configure_sqlite(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # The driver's own implicit BEGIN is deferred and cannot be made IMMEDIATE; turning it
    # off lets _begin_sqlite emit the BEGIN (the SQLAlchemy-documented aiosqlite recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _begin_sqlite(conn: Connection) -> None:
    # A deferred transaction that reads and then writes can fail with SQLITE_BUSY without
    # waiting when another writer committed in between; IMMEDIATE takes the write lock up
    # front, so busy_timeout applies and writers queue instead of failing.
    immediate = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def alembic_config() -> Config:
    """An Alembic configuration built in code; no alembic.ini is needed at run time."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade_to_head(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


# Alembic keeps the running migration in module globals (alembic.context, alembic.op), so two
# upgrades in one process must not interleave. Other processes are kept apart by the database:
# BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL (see env.py).
_upgrade_lock = threading.Lock()


async def upgrade(engine: AsyncEngine) -> None:
    """Applies pending migrations to the database `engine` points at.

    Alembic's work between two statements (loading scripts, building DDL) is plain Python that
    stalled the loop for half a second under load; it runs on a worker thread, with a loop and a
    connection of its own. An in-memory SQLite database exists only in `engine`'s pool, so it is
    migrated in place.
    """
    url = engine.url
    if url.get_backend_name() == "sqlite" and sqlite_path(url) is None:
        await _upgrade_through(engine)
        return
    await asyncio.to_thread(_upgrade_blocking, url)


def _upgrade_blocking(url: URL) -> None:
    with _upgrade_lock:
        asyncio.run(_upgrade_fresh(url))


async def _upgrade_fresh(url: URL) -> None:
    engine = make_engine(url)
    try:
        await _upgrade_through(engine)
    finally:
        await engine.dispose()


async def _upgrade_through(engine: AsyncEngine) -> None:
    # On SQLite the migration's transaction takes the write lock up front, like any writer.
    writer = engine.execution_options(**{WRITE_OPTION: True})
    async with writer.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # replicas starting together wait out each other's whole migration (a table
            # rebuild takes seconds on a large history), not only a writer's usual turn
            await _busy_timeout(conn, MIGRATION_BUSY_TIMEOUT_MS)
        try:
            await conn.run_sync(_upgrade_to_head)
            await conn.commit()
        finally:
            if sqlite:
                await _busy_timeout(conn, SQLITE_BUSY_TIMEOUT_MS)


async def _busy_timeout(conn: AsyncConnection, milliseconds: int) -> None:
    """Set SQLite's busy timeout on the driver connection, outside any transaction."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, aiosqlite.Connection):
        raise TypeError(f"expected an aiosqlite connection, got {driver!r}")
    cursor = await driver.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")
    await cursor.close()


async def open_engine(url: str | URL) -> AsyncEngine:
    """Creates the engine; a SQLite file is made private (0600, directory 0700) and WAL."""
    parsed = parse_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        await asyncio.to_thread(_private_sqlite_file, path)
    engine = make_engine(parsed)
    if path is not None:
        try:
            await _enable_wal(engine)
        except BaseException:
            await engine.dispose()
            raise
    return engine


async def _enable_wal(engine: AsyncEngine) -> None:
    # WAL lets readers run beside the single writer. It is a property of the file, so one
    # switch lasts; it is not done in the connect hook because the switch needs an exclusive
    # lock that SQLite refuses at once, ignoring busy_timeout, while another process holds
    # the write lock (a replica migrating). Nothing signals that lock's release: retry.
    # synchronous stays FULL (the default): a journal row must survive power loss once the
    # platform has been acked.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SQLITE_BUSY_TIMEOUT_MS / 1000
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        if not isinstance(driver, aiosqlite.Connection):
            raise TypeError(f"expected an aiosqlite connection, got {driver!r}")
        while True:
            try:
                async with driver.execute("PRAGMA journal_mode = WAL") as cursor:
                    row = await cursor.fetchone()
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or loop.time() >= deadline:
                    raise
            await asyncio.sleep(WAL_SWITCH_RETRY_DELAY)
    if row is None or row[0] != "wal":
        raise RuntimeError(f"SQLite kept journal mode {row!r} instead of WAL")


async def migrate(url: str) -> None:
    """Applies Alembic migrations to head (daemon start and `channeld migrate`)."""
    engine = await open_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
