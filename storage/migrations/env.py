"""Alembic environment: runs on a connection handed over by storage.engine, or on a URL."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from storage.engine import make_engine
from storage.models import UtcDateTime, metadata

# Any constant works; it only has to be the same on every replica.
_PG_MIGRATION_LOCK = 0x6368616E  # "chan"


def _render_item(type_: str, obj: Any, _autogen_context: AutogenContext) -> str | Literal[False]:
    # Generated revisions must not import storage.models: they outlive the current models.
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        render_item=_render_item,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        # SQLite's DDL is transactional, but Alembic assumes not and commits after each
        # revision; a replica waiting for the write lock could then get it between two revisions
        # and apply one the first replica was about to apply ("table voice_call already exists").
        transactional_ddl=True,
        **kwargs,
    )


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Replicas starting together would race on CREATE TABLE; the first one migrates,
            # the others wait here and then find the schema at head.
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
            )
        context.run_migrations()


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    url = url or context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set sqlalchemy.url")
    return url


async def _run_on_url(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


connection = context.config.attributes.get("connection")
if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    _run(connection)
else:
    # Only development tooling gets here, e.g. command.revision(storage.engine.alembic_config()
    # with sqlalchemy.url set, autogenerate=True); the daemon always hands over a connection.
    asyncio.run(_run_on_url(_url()))
