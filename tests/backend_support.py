"""Run a test on both storage backends: a SQLite file and this run's own PostgreSQL database.

Bring the fixtures into a module by name (`from tests.backend_support import backend, ...`):
* `postgres`: the run's PostgreSQL database (session scope); tests using it skip, saying why,
  when the server at CHANNELD_TEST_POSTGRES_URL (default 127.0.0.1:5432) is unreachable.
* `backend`: "sqlite" or "postgresql", each test running once with each.
* `database_url`: the URL of a database with no rows for that backend (the schema is left to
  whatever opens it: `Store.open` and the daemon migrate).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import Settings
from tests.storage_support import PostgresDatabase, sqlite_url

__all__ = ["backend", "database_url", "postgres", "with_database"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabase]:
    """This run's PostgreSQL database, dropped at the end."""
    database = PostgresDatabase()
    yield database
    database.drop()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend of this run of the test."""
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, tmp_path: Path, postgres: PostgresDatabase) -> str:
    """A database of the backend with no rows."""
    if backend == "sqlite":
        return sqlite_url(tmp_path / "channeld.db")
    return await postgres.clean()


def with_database(settings: Settings, url: str) -> Settings:
    """Daemon settings like `settings`, on the database at `url`."""
    daemon = settings.daemon.model_copy(update={"database_url": url})
    return settings.model_copy(update={"daemon": daemon})
