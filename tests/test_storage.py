"""The store against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection

from storage import ConversationRecord, JournalState, Store, migrate
from storage.engine import alembic_config, make_engine
from storage.models import metadata
from tests.backend_support import backend, postgres
from tests.storage_support import FakeClock, PostgresDatabase, migrate_in_processes, sqlite_url

__all__ = ["backend", "postgres"]  # the shared backend fixtures (tests/backend_support.py)

TABLES = {
    "alembic_version",
    "channel",
    "conversation",
    "inbound_journal",
    "message",
    "platform_identity",
    "user_account",
    "voice_call",
}
IDLE = timedelta(hours=1)
CHANNEL: dict[str, Any] = {
    "type": "dingtalk",
    "agent": "default",
    "enabled": True,
    "source": "config",
    "spec": {"client_id": "abc", "scopes": ["a", "b"]},
}


@pytest.fixture
async def database_url(backend: str, tmp_path: Path, postgres: PostgresDatabase) -> str:
    """A database without tables; the SQLite file's directory does not exist yet."""
    if backend == "sqlite":
        return sqlite_url(tmp_path / "state" / "channeld.db")
    return await postgres.empty()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(
    backend: str, tmp_path: Path, postgres: PostgresDatabase, clock: FakeClock
) -> AsyncIterator[Store]:
    """A migrated database with no rows."""
    if backend == "sqlite":
        url = sqlite_url(tmp_path / "state" / "channeld.db")
    else:
        url = await postgres.clean()
    opened = await Store.open(url, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


async def _sql(store: Store, statement: str, **params: Any) -> list[Any]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(text(statement), params)).all())


def _schema(conn: Connection) -> tuple[set[str], list[Any]]:
    tables = set(inspect(conn).get_table_names())
    return tables, compare_metadata(MigrationContext.configure(conn), metadata)


async def _accept(store: Store, message_id: str, channel_id: str = "ding") -> int:
    entry_id = await store.journal_accept(channel_id, message_id, None, "{}")
    assert entry_id is not None
    return entry_id


async def _conversation(
    store: Store, now: datetime, key: str = "direct:c1", channel_id: str = "ding"
) -> ConversationRecord:
    user = await store.resolve_user("dingtalk", "corp", "u1", "Alice")
    conversation, _ = await store.conversation_with_history(
        channel_id, key, user, idle_reset=IDLE, now=now, limit=0
    )
    return conversation


# --- schema -------------------------------------------------------------------------------


async def test_migrate_creates_the_schema_and_is_idempotent(database_url: str) -> None:
    # Alembic keeps the running migration in globals: two in one process must queue.
    await asyncio.gather(migrate(database_url), migrate(database_url))
    await migrate(database_url)
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables, differences = await conn.run_sync(_schema)
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    finally:
        await engine.dispose()
    assert tables == TABLES
    assert differences == [], "models and migrations disagree"
    assert version == [(ScriptDirectory.from_config(alembic_config()).get_current_head(),)]


async def test_replicas_migrating_at_once_all_succeed(database_url: str) -> None:
    # Separate processes, as replicas are: only the database's own locking (advisory lock,
    # BEGIN IMMEDIATE) keeps them apart.
    results = await migrate_in_processes(database_url, 3)
    assert [code for code, _ in results] == [0, 0, 0], [err for _, err in results]
    store = await Store.open(database_url)
    try:
        assert await _sql(store, "SELECT count(*) FROM alembic_version") == [(1,)]
    finally:
        await store.close()


async def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    store = await Store.open(sqlite_url(tmp_path / "a" / "b" / "channeld.db"))
    try:
        assert (tmp_path / "a" / "b" / "channeld.db").exists()
        assert await _sql(store, "PRAGMA journal_mode") == [("wal",)]
        assert await _sql(store, "PRAGMA busy_timeout") == [(5000,)]
        assert await _sql(store, "PRAGMA foreign_keys") == [(1,)]
    finally:
        await store.close()


async def test_ping(store: Store) -> None:
    assert await store.ping() is True


async def test_ping_is_false_when_the_database_is_down() -> None:
    # Port 1 on loopback refuses at once: nothing listens there.
    store = await Store.open("postgresql+asyncpg://postgres@127.0.0.1:1/none", migrate=False)
    try:
        assert await store.ping() is False
    finally:
        await store.close()


async def test_naive_datetimes_are_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.journal_prune(datetime(2025, 1, 1))  # naive on purpose


# --- journal ------------------------------------------------------------------------------


async def test_journal_accept_records_a_received_entry(store: Store, clock: FakeClock) -> None:
    clock.now = datetime(2025, 3, 1, 16, 0, 0, 123456, tzinfo=timezone(timedelta(hours=8)))
    entry_id = await store.journal_accept("ding", "msg-1", "frame-1", '{"text": "hi"}')
    assert entry_id is not None
    entry = await store.journal_get(entry_id)
    assert entry is not None
    assert (entry.channel_id, entry.platform_message_id, entry.frame_id, entry.payload) == (
        ("ding", "msg-1", "frame-1", '{"text": "hi"}')
    )
    assert entry.state is JournalState.RECEIVED
    assert (entry.conversation_id, entry.card_id, entry.delivered_text, entry.error) == (
        (None, None, "", None)
    )
    # Same instant, handed back in UTC whatever zone it came in.
    assert entry.created_at == entry.updated_at == clock.now
    assert entry.created_at.utcoffset() == timedelta(0)
    assert await store.journal_get(entry_id + 1000) is None


async def test_journal_rejects_a_redelivered_message_id(store: Store) -> None:
    first = await store.journal_accept("ding", "msg-1", "frame-1", "{}")
    assert first is not None
    assert await store.journal_accept("ding", "msg-1", "frame-2", "{}") is None
    assert await store.journal_accept("ding", "msg-1", None, "{}") is None
    # The key is per channel.
    assert await store.journal_accept("feishu", "msg-1", "frame-1", "{}") is not None
    assert [e.id for e in await store.journal_unfinished("ding")] == [first]


async def test_journal_batch_is_one_transaction_that_skips_only_redeliveries(
    store: Store, clock: FakeClock
) -> None:
    earlier = await store.journal_accept("hook", "m1", None, "{}")
    assert earlier is not None
    commits = 0

    def count(_: Connection) -> None:
        nonlocal commits
        commits += 1

    event.listen(store.engine.sync_engine, "commit", count)
    try:
        ids = await store.journal_accept_batch(
            "hook", [("m1", "{}"), ("m2", '{"n": 2}'), ("m2", "{}"), ("m3", "{}")]
        )
    finally:
        event.remove(store.engine.sync_engine, "commit", count)
    assert commits == 1
    assert ids[0] is None and ids[2] is None  # seen before, and earlier in the same batch
    assert ids[1] is not None and ids[3] is not None
    entries = await store.journal_unfinished("hook")
    assert [(e.platform_message_id, e.payload) for e in entries] == [
        ("m1", "{}"),
        ("m2", '{"n": 2}'),
        ("m3", "{}"),
    ]
    assert all(e.created_at == clock.now and e.state is JournalState.RECEIVED for e in entries)
    assert await store.journal_accept_batch("hook", []) == []


async def test_journal_rejects_a_redelivered_frame_id(store: Store) -> None:
    assert await store.journal_accept("ding", "msg-1", "frame-1", "{}") is not None
    assert await store.journal_accept("ding", "msg-2", "frame-1", "{}") is None
    # Frames without an id never collide with each other.
    await _accept(store, "msg-3")
    await _accept(store, "msg-4")
    assert len(await store.journal_unfinished("ding")) == 3


async def test_journal_update_moves_state_and_keeps_unset_fields(
    store: Store, clock: FakeClock
) -> None:
    entry_id = await _accept(store, "msg-1")
    conversation = await _conversation(store, clock.now)
    later = clock.advance(timedelta(seconds=5))
    await store.journal_update(
        entry_id, state=JournalState.REPLYING, conversation_id=conversation.id, card_id="card-9"
    )
    await store.journal_update(entry_id, delivered_text="Hello, wor")
    entry = await store.journal_get(entry_id)
    assert entry is not None
    assert (entry.state, entry.conversation_id, entry.card_id, entry.delivered_text) == (
        (JournalState.REPLYING, conversation.id, "card-9", "Hello, wor")
    )
    assert entry.created_at < entry.updated_at == later

    await store.journal_update(entry_id, state=JournalState.FAILED, error="card 403")
    entry = await store.journal_get(entry_id)
    assert entry is not None
    assert (entry.state, entry.error, entry.card_id) == (JournalState.FAILED, "card 403", "card-9")
    with pytest.raises(LookupError):
        await store.journal_update(entry_id + 1000, state=JournalState.REPLIED)


async def test_journal_unfinished_lists_received_and_replying_oldest_first(store: Store) -> None:
    ids = {
        name: await _accept(store, name, channel)
        for name, channel in zip("abcde", ["ding", "feishu", "ding", "ding", "ding"], strict=True)
    }
    await store.journal_update(ids["a"], state=JournalState.REPLYING)
    await store.journal_update(ids["c"], state=JournalState.REPLIED)
    await store.journal_update(ids["d"], state=JournalState.IGNORED)

    everything = await store.journal_unfinished()
    assert [(e.platform_message_id, e.state) for e in everything] == [
        ("a", JournalState.REPLYING),
        ("b", JournalState.RECEIVED),
        ("e", JournalState.RECEIVED),
    ]
    assert [e.platform_message_id for e in await store.journal_unfinished("ding")] == ["a", "e"]
    assert await store.journal_unfinished("wecom") == []


async def test_journal_prune_deletes_only_old_finished_entries(
    store: Store, clock: FakeClock
) -> None:
    conversation = await _conversation(store, clock.now)
    old = {state: await _accept(store, f"old-{state}") for state in JournalState}
    for state, entry_id in old.items():
        await store.journal_update(entry_id, state=state)
    replied = old[JournalState.REPLIED]
    await store.append_message(conversation.id, "user", "hi", journal_id=replied, now=clock.now)
    cutoff = clock.advance(timedelta(days=7))
    recent = await _accept(store, "new-replied")
    await store.journal_update(recent, state=JournalState.REPLIED)

    assert await store.journal_prune(cutoff) == 3
    assert await store.journal_prune(cutoff) == 0
    remaining = {s for s, i in old.items() if await store.journal_get(i) is not None}
    assert remaining == {JournalState.RECEIVED, JournalState.REPLYING}
    assert await store.journal_get(recent) is not None
    # The history survives the pruned journal row; only the link is cleared.
    [message] = await store.recent_messages(conversation.id, 10)
    assert (message.content, message.journal_id) == ("hi", None)
    # A pruned message id can be journaled again.
    await _accept(store, "old-replied")


async def test_concurrent_journal_accept_yields_one_id_per_message(store: Store) -> None:
    calls = [(f"msg-{i}", f"frame-{i}") for i in range(35)]
    calls += [(f"msg-{i}", f"frame-{i}") for i in range(10)]  # redelivered as is
    calls += [(f"msg-{i}-again", f"frame-{i}") for i in range(10, 15)]  # same frame, new id
    assert len(calls) == 50

    results = await asyncio.gather(
        *(store.journal_accept("ding", msg, frame, "{}") for msg, frame in calls)
    )

    accepted = {frame: result for (_, frame), result in zip(calls, results, strict=True) if result}
    assert sorted(accepted) == sorted(f"frame-{i}" for i in range(35))
    assert results.count(None) == 15
    assert len(set(accepted.values())) == 35
    unfinished = await store.journal_unfinished("ding")
    assert sorted(e.id for e in unfinished) == sorted(accepted.values())


# --- users --------------------------------------------------------------------------------


async def test_resolve_user_creates_once_and_follows_the_display_name(store: Store) -> None:
    alice = await store.resolve_user("dingtalk", "corp", "staff-1", "Alice")
    assert len(alice) == 32
    assert await store.resolve_user("dingtalk", "corp", "staff-1", "Alice") == alice
    assert await store.resolve_user("dingtalk", "corp", "staff-1", "Alice W.") == alice
    # An empty name (the platform did not send one) keeps the known one.
    assert await store.resolve_user("dingtalk", "corp", "staff-1", "") == alice
    names = await _sql(store, "SELECT display_name FROM user_account WHERE id = :id", id=alice)
    assert names == [("Alice W.",)]
    assert await _sql(store, "SELECT display_name FROM platform_identity") == [("Alice W.",)]

    others = {
        await store.resolve_user("dingtalk", "other-corp", "staff-1", "Alice"),
        await store.resolve_user("feishu", "corp", "staff-1", "Alice"),
        await store.resolve_user("dingtalk", "corp", "staff-2", "Bob"),
    }
    assert alice not in others
    assert len(others) == 3


async def test_a_returning_user_costs_no_statement_until_their_name_changes(
    store: Store,
) -> None:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    first = await store.resolve_user("feishu", "tenant", "ou_9", "Dana")
    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        assert await store.resolve_user("feishu", "tenant", "ou_9", "Dana") == first
        assert await store.resolve_user("feishu", "tenant", "ou_9", "") == first
        assert statements == []
        assert await store.resolve_user("feishu", "tenant", "ou_9", "Dana B.") == first
        assert any("UPDATE" in s for s in statements)
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
    names = await _sql(store, "SELECT display_name FROM user_account")
    assert names == [("Dana B.",)]


async def test_concurrent_resolve_user_returns_one_user(store: Store) -> None:
    results = await asyncio.gather(
        *(store.resolve_user("feishu", "tenant", "ou_1", "Carol") for _ in range(20))
    )
    assert len(set(results)) == 1
    assert await _sql(store, "SELECT count(*) FROM user_account") == [(1,)]
    assert await _sql(store, "SELECT count(*) FROM platform_identity") == [(1,)]


# --- conversations ------------------------------------------------------------------------


async def test_current_conversation_resets_after_idle_time(store: Store, clock: FakeClock) -> None:
    start = clock.now
    first = await _conversation(store, start)
    assert (first.channel_id, first.key) == ("ding", "direct:c1")
    assert first.user_id == await store.resolve_user("dingtalk", "corp", "u1", "Alice")
    assert first.created_at == first.last_activity_at == start
    assert first.closed_at is None

    assert (await _conversation(store, start + timedelta(minutes=50))).id == first.id
    # Activity, not the last lookup, keeps a conversation alive.
    await store.append_message(first.id, "user", "hi", now=start + timedelta(minutes=50))
    still = await _conversation(store, start + timedelta(minutes=110))
    assert still.id == first.id
    assert still.last_activity_at == start + timedelta(minutes=50)
    # Other keys are other conversations.
    other = await _conversation(store, start + timedelta(minutes=110), key="group:g1:u1")
    assert other.id != first.id

    reset_at = start + timedelta(minutes=111)
    fresh = await _conversation(store, reset_at)
    assert fresh.id != first.id
    assert fresh.created_at == reset_at
    closed = await store.get_conversation(first.id)
    assert closed is not None
    assert closed.closed_at == reset_at


async def test_start_new_conversation_closes_the_current_one(
    store: Store, clock: FakeClock
) -> None:
    first = await _conversation(store, clock.now)
    now = clock.advance(timedelta(minutes=1))
    second = await store.start_new_conversation("ding", "direct:c1", first.user_id, now=now)
    assert second.id != first.id
    assert second.closed_at is None
    assert (await _conversation(store, now)).id == second.id
    old = await store.get_conversation(first.id)
    assert old is not None
    assert old.closed_at == now
    # /new with nothing open just opens one.
    other = await store.start_new_conversation("ding", "direct:c2", first.user_id, now=now)
    assert (other.key, other.closed_at) == ("direct:c2", None)


async def test_concurrent_current_conversation_opens_one(store: Store, clock: FakeClock) -> None:
    results = await asyncio.gather(*(_conversation(store, clock.now) for _ in range(10)))
    assert len({c.id for c in results}) == 1
    assert len(await store.list_conversations("ding")) == 1


async def test_messages_come_back_in_order_and_limited(store: Store, clock: FakeClock) -> None:
    conversation = await _conversation(store, clock.now)
    entry_id = await _accept(store, "msg-1")
    for turn in range(6):
        role = "user" if turn % 2 == 0 else "assistant"
        journal_id = entry_id if turn == 4 else None
        # Same timestamp for all: the order must not depend on the clock's resolution.
        await store.append_message(
            conversation.id, role, f"turn {turn}", journal_id=journal_id, now=clock.now
        )

    last = await store.recent_messages(conversation.id, 3)
    assert [(m.content, m.role, m.journal_id) for m in last] == [
        ("turn 3", "assistant", None),
        ("turn 4", "user", entry_id),
        ("turn 5", "assistant", None),
    ]
    assert {(m.conversation_id, m.created_at) for m in last} == {(conversation.id, clock.now)}
    everything = await store.recent_messages(conversation.id, 100)
    assert [m.content for m in everything] == [f"turn {turn}" for turn in range(6)]
    assert await store.recent_messages(conversation.id, 0) == []
    assert await store.recent_messages("no-such-conversation", 5) == []
    with pytest.raises(LookupError):
        await store.append_message("no-such-conversation", "user", "hi", now=clock.now)


async def test_list_conversations_newest_activity_first(store: Store, clock: FakeClock) -> None:
    start = clock.now
    a = await _conversation(store, start, key="direct:a")
    b = await _conversation(store, start + timedelta(minutes=1), key="direct:b")
    c = await _conversation(store, start + timedelta(minutes=2), key="direct:c", channel_id="lark")
    await store.append_message(a.id, "user", "bump", now=start + timedelta(minutes=3))

    assert [x.id for x in await store.list_conversations()] == [a.id, c.id, b.id]
    assert [x.id for x in await store.list_conversations("ding")] == [a.id, b.id]
    assert [x.id for x in await store.list_conversations(limit=1)] == [a.id]


# --- channels -----------------------------------------------------------------------------


async def test_channel_upsert_versions_only_real_changes(store: Store, clock: FakeClock) -> None:
    created = await store.upsert_channel(
        "ding", **CHANNEL | {"spec": {"client_id": "abc", "scopes": ("a", "b")}}
    )
    assert (created.id, created.type, created.agent, created.enabled, created.source) == (
        ("ding", "dingtalk", "default", True, "config")
    )
    assert created.spec == CHANNEL["spec"]
    assert created.version == 1
    assert created.created_at == created.updated_at == clock.now

    clock.advance(timedelta(minutes=1))
    # Same content in another order is no change.
    reordered = CHANNEL | {"spec": {"scopes": ["a", "b"], "client_id": "abc"}}
    assert await store.upsert_channel("ding", **reordered) == created

    edited_at = clock.advance(timedelta(minutes=1))
    fields = CHANNEL | {"spec": {"client_id": "xyz"}}
    edited = await store.upsert_channel("ding", **fields)
    assert (edited.version, edited.spec, edited.updated_at) == (2, {"client_id": "xyz"}, edited_at)
    assert edited.created_at == created.created_at

    changes: tuple[dict[str, Any], ...] = ({"agent": "b"}, {"type": "feishu"}, {"enabled": False})
    for version, change in enumerate(changes, 3):
        fields |= change
        edited = await store.upsert_channel("ding", **fields)
        assert edited.version == version
    assert (edited.agent, edited.type, edited.enabled) == ("b", "feishu", False)
    # Where a channel is defined is bookkeeping, not a change to reconcile.
    moved = await store.upsert_channel("ding", **fields | {"source": "api"})
    assert (moved.source, moved.version) == ("api", 5)
    assert await store.get_channel("ding") == moved


async def test_channel_enable_disable_list_and_delete(store: Store) -> None:
    for channel_id in ("b-feishu", "a-ding"):
        await store.upsert_channel(channel_id, **CHANNEL)
    disabled = await store.set_channel_enabled("a-ding", False)
    again = await store.set_channel_enabled("a-ding", False)
    enabled = await store.set_channel_enabled("a-ding", True)
    assert disabled is not None
    assert again is not None
    assert enabled is not None
    assert [(r.enabled, r.version) for r in (disabled, again, enabled)] == [
        (False, 2),
        (False, 2),
        (True, 3),
    ]
    assert await store.set_channel_enabled("missing", True) is None

    assert [c.id for c in await store.list_channels()] == ["a-ding", "b-feishu"]
    assert await store.delete_channel("a-ding") is True
    assert await store.delete_channel("a-ding") is False
    assert await store.get_channel("a-ding") is None
    assert [c.id for c in await store.list_channels()] == ["b-feishu"]


async def test_a_write_whose_caller_is_cancelled_still_ends_cleanly(store: Store) -> None:
    """Cut mid-statement, a transaction used to leave its connection discarded uncleanly, at
    worst holding SQLite's write lock; the write now completes and the caller still sees its
    cancellation."""
    pace = random.Random(7)  # cancellation points, the same every run
    ids = [await store.journal_accept("cut", f"m{n}", None, "{}") for n in range(40)]
    for entry_id in ids:
        assert entry_id is not None
        write = asyncio.create_task(store.journal_update(entry_id, delivered_text="seen"))
        await asyncio.sleep(pace.random() * 0.004)
        write.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await write
        async with asyncio.timeout(2):  # not busy_timeout: nobody holds the lock
            await store.journal_update(entry_id, state=JournalState.FAILED)
        entry = await store.journal_get(entry_id)
        assert entry is not None and (entry.delivered_text, entry.state) == (
            "seen",
            JournalState.FAILED,
        )
