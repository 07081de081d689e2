"""The state directory is 0700 and every database file 0600, whatever the umask says."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.app import Daemon
from daemon.config import Settings, validate


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual login umask, under which files default to 0644 and directories to 0755."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def settings(state: Path) -> Settings:
    return validate(
        {
            "daemon": {"state_dir": str(state), "graceful_timeout": 0},
            "admin": {"listen": "127.0.0.1:0"},
            "agents": {"default": {"type": "echo"}},
        }
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(directory: Path) -> dict[str, int]:
    return {p.name: mode(p) for p in directory.iterdir()}


async def modes_while_running(state: Path) -> dict[str, int]:
    """Every file in the state directory and its mode, read while the daemon runs.

    SQLite removes -wal and -shm when the last connection closes: they exist only meanwhile.
    """
    daemon = Daemon(settings(state))
    await daemon.start()
    try:
        assert daemon.store is not None
        assert await daemon.store.ping()
        return await asyncio.to_thread(modes, state)
    finally:
        await daemon.stop()


@pytest.mark.usefixtures("umask_022")
async def test_a_fresh_state_directory_is_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    files = await modes_while_running(state)
    assert mode(state) == 0o700
    # the lazily created WAL and shared-memory files are there, so they are checked too
    assert {"channeld.db", "channeld.db-wal", "channeld.db-shm", "secret.key"} <= set(files)
    assert files == dict.fromkeys(files, 0o600)


@pytest.mark.usefixtures("umask_022")
async def test_state_left_open_by_an_older_version_is_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    sqlite3.connect(state / "channeld.db").close()  # 0644 under this umask
    (state / "channeld.db-wal").touch()  # an empty WAL is a valid one
    assert mode(state) == 0o755 and mode(state / "channeld.db") == 0o644
    with caplog.at_level(logging.WARNING, logger="storage.engine"):
        files = await modes_while_running(state)
    assert mode(state) == 0o700
    assert {"channeld.db", "channeld.db-wal", "channeld.db-shm"} <= set(files)
    assert files == dict.fromkeys(files, 0o600)
    assert "was mode 0755" in caplog.text and "was mode 0644" in caplog.text
