"""What each backend refuses, how the refusal is classified, and what normalisation stores.

Real drivers, real databases: sqlite3 (through aiosqlite) and asyncpg against PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from channels import normalize
from channels.model import ChannelId, ChatType, InboundMessage, Sender, inbound_to_json
from storage import Store
from storage import engine as storage_engine
from storage.errors import describe, unstorable
from tests.backend_support import backend, database_url, postgres
from tests.hostile_support import store_inbound
from tests.storage_support import WriteLock

__all__ = ["backend", "database_url", "postgres"]

Write = Callable[[Store], Awaitable[object]]
# Raw values, as a provider that skipped normalisation would hand them over.
RAW_WRITES: dict[str, Write] = {
    "surrogate in the payload": lambda s: s.journal_accept("c", "m1", None, '{"t": "\udcff"}'),
    "surrogate in a name": lambda s: s.resolve_user("p", "t", "u1", "a\udcffb"),
    "NUL in a name": lambda s: s.resolve_user("p", "t", "u2", "a\x00b"),
    "id of 300 characters": lambda s: s.journal_accept("c", "m" * 300, None, "{}"),
    "name of 300 characters": lambda s: s.resolve_user("p", "t", "u3", "n" * 300),
}
# SQLite takes NUL and any length; neither backend can encode a lone surrogate.
REFUSED = {
    "sqlite": {"surrogate in the payload", "surrogate in a name"},
    "postgresql": set(RAW_WRITES),
}


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(database_url)
    try:
        yield opened
    finally:
        await opened.close()


async def one(store: Store, sql: str) -> tuple[Any, ...]:
    async with store.engine.connect() as conn:
        return tuple((await conn.execute(text(sql))).one())


async def test_each_backend_refuses_raw_values_and_the_refusal_is_poison(
    store: Store, backend: str
) -> None:
    refused: dict[str, Exception] = {}
    for what, write in RAW_WRITES.items():
        try:
            await write(store)
        except Exception as exc:  # noqa: BLE001 - whatever the driver raises is under test
            refused[what] = exc
    assert set(refused) == REFUSED[backend]
    for what, error in refused.items():
        assert unstorable(error), (what, error)
        # the log line names the driver's error, never the values
        assert "a\udcffb" not in describe(error) and "nnnnn" not in describe(error), what


async def test_normalised_values_are_stored_alike_on_both_backends(store: Store) -> None:
    raw = InboundMessage(
        channel_id=ChannelId("c"),
        platform="dingtalk",
        message_id="m" * 300,
        chat_id="chat\x00",
        chat_type=ChatType.GROUP,
        sender=Sender("u" * 300, "Na\x00me\udcff" + "n" * 300),
        text="hi \udcff\x00 there",
        received_at=datetime(2025, 3, 1, tzinfo=UTC),
        bot_mentioned=True,
        tenant="t\udcff",
    )
    assert await store_inbound(store, raw) == raw
    journal = await one(store, "SELECT platform_message_id, payload FROM inbound_journal")
    identity = await one(
        store, "SELECT tenant, platform_user_id, display_name FROM platform_identity"
    )
    (key,) = await one(store, "SELECT key FROM conversation")
    (content,) = await one(store, "SELECT content FROM message")
    # the literal values: the same on SQLite and PostgreSQL
    assert journal[0] == "m" * 233 + "~88c6e4c1d9337601"
    assert json.loads(journal[1]) == json.loads(inbound_to_json(raw))
    assert identity == (
        "t\ufffd~c178dd5489c3d88a",
        "u" * 233 + "~8b5089b44d9fefea",
        ("Name\ufffd" + "n" * 300)[:250],
    )
    assert key == "group:chat~207ae88eb32b1464:" + "u" * 233 + "~8b5089b44d9fefea"
    assert content == "hi \ufffd there"
    # a redelivery of the same raw message id is recognised as one
    assert await store.journal_accept("c", normalize.platform_id("m" * 300), None, "{}") is None


async def test_an_outage_is_transient_not_poison(
    backend: str, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "postgresql":
        # a server that is not there: the connection is refused
        store = await Store.open("postgresql+asyncpg://postgres@127.0.0.1:1/none", migrate=False)
        lock = None
    else:
        # another process holds the write lock past the busy timeout
        monkeypatch.setattr(storage_engine, "SQLITE_BUSY_TIMEOUT_MS", 100)
        store = await Store.open(database_url)
        lock = WriteLock(tmp_path / "channeld.db")
        await lock.take()
    try:
        with pytest.raises(Exception) as caught:  # noqa: PT011 - any driver error, classified below
            await asyncio.wait_for(store.journal_accept("c", "m1", None, "{}"), 10)
        assert not unstorable(caught.value), describe(caught.value)
    finally:
        if lock is not None:
            await lock.release()
        await store.close()
