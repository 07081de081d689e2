"""Retention: old finished journal rows and idle conversations go, in batches, on both backends."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from daemon.app import Daemon
from daemon.config import ConfigurationError, load, validate
from daemon.retention import Pruner
from storage import JournalState, Store
from tests.backend_support import backend, postgres
from tests.e2e_support import wait_until
from tests.storage_support import FakeClock, sqlite_url
from tests.test_storage import clock, store

__all__ = ["backend", "clock", "postgres", "store"]

DAY = timedelta(days=1)


async def _count(store: Store, table: str) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())  # noqa: S608 - fixed table names


async def _journal(store: Store, message_id: str, state: JournalState) -> int:
    entry_id = await store.journal_accept("ding", message_id, None, '{"sessionWebhook": "x"}')
    assert entry_id is not None
    await store.journal_update(entry_id, state=state)
    return entry_id


async def _chat(store: Store, clock: FakeClock, key: str, turns: int = 2) -> str:
    user = await store.resolve_user("dingtalk", "corp", f"u-{key}", "Alice")
    conversation, _ = await store.conversation_with_history(
        "ding", key, user, idle_reset=timedelta(hours=1), now=clock.now, limit=0
    )
    for turn in range(turns):
        await store.append_message(conversation.id, "user", f"turn {turn}", now=clock.now)
    return conversation.id


async def test_journal_prune_in_batches_keeps_unfinished_rows(
    store: Store, clock: FakeClock
) -> None:
    finished = [JournalState.REPLIED, JournalState.FAILED, JournalState.IGNORED]
    old = [await _journal(store, f"old-{i}", finished[i % 3]) for i in range(7)]
    pending = [
        await _journal(store, "old-received", JournalState.RECEIVED),
        await _journal(store, "old-replying", JournalState.REPLYING),
    ]
    cutoff = clock.advance(31 * DAY)
    fresh = await _journal(store, "fresh", JournalState.REPLIED)

    assert await store.journal_prune(cutoff, limit=3) == 3
    assert await store.journal_prune(cutoff, limit=3) == 3
    assert await store.journal_prune(cutoff, limit=3) == 1
    assert await store.journal_prune(cutoff, limit=3) == 0
    assert [await store.journal_get(i) for i in old] == [None] * 7
    # recovery still needs these, however old
    assert None not in [await store.journal_get(i) for i in pending]
    assert await store.journal_get(fresh) is not None


async def test_conversations_prune_takes_messages_and_unlinks_the_journal(
    store: Store, clock: FakeClock
) -> None:
    stale = [await _chat(store, clock, f"direct:old-{i}") for i in range(5)]
    linked = await _journal(store, "linked", JournalState.REPLYING)
    await store.journal_update(linked, conversation_id=stale[0])
    clock.advance(10 * DAY)
    active = await _chat(store, clock, "direct:new")
    cutoff = clock.now - 5 * DAY

    assert await store.conversations_prune(cutoff, limit=2) == 2
    assert await store.conversations_prune(cutoff, limit=2) == 2
    assert await store.conversations_prune(cutoff, limit=2) == 1
    assert await store.conversations_prune(cutoff, limit=2) == 0

    assert [await store.get_conversation(c) for c in stale] == [None] * 5
    assert await store.get_conversation(active) is not None
    assert await _count(store, "message") == 2  # only the active conversation's turns
    entry = await store.journal_get(linked)
    assert entry is not None and entry.conversation_id is None


async def test_pruner_drains_in_batches_and_reports_counts(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(12):
        await _journal(store, f"j{i}", JournalState.REPLIED)
    for i in range(4):
        await _chat(store, clock, f"direct:c{i}")
    clock.advance(40 * DAY)
    await _journal(store, "recent", JournalState.REPLIED)
    pruned: list[tuple[str, int]] = []
    pruner = Pruner(
        store,
        journal_days=30,
        conversation_days=35,
        on_pruned=lambda table, count: pruned.append((table, count)),
        batch=5,
        pause=0,
        clock=clock,
    )

    with caplog.at_level(logging.INFO, logger="daemon.retention"):
        pruner.start()
        try:
            await wait_until(lambda: pruned[-1:] == [("conversation", 4)])
        finally:
            await pruner.stop()

    assert pruned == [("journal", 5), ("journal", 5), ("journal", 2), ("conversation", 4)]
    assert await _count(store, "inbound_journal") == 1
    assert await _count(store, "conversation") == 0
    assert any("deleted 12 journal row(s)" in r.getMessage() for r in caplog.records)


async def test_pruner_keeps_everything_when_both_ages_are_zero(
    store: Store, clock: FakeClock
) -> None:
    await _journal(store, "ancient", JournalState.REPLIED)
    await _chat(store, clock, "direct:ancient")
    clock.advance(3650 * DAY)
    pruner = Pruner(store, journal_days=0, conversation_days=0, clock=clock)
    assert not pruner.enabled
    pruner.start()  # nothing to schedule
    report = await pruner.prune()
    await pruner.stop()
    assert (report.journal, report.conversations) == (0, 0)
    assert await _count(store, "inbound_journal") == 1
    assert await _count(store, "conversation") == 1


async def test_the_daemon_prunes_at_start_and_counts_it(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "channeld.db")
    past = FakeClock(datetime.now(UTC) - 40 * DAY)
    seeded = await Store.open(url, clock=past)
    try:
        for n in range(3):
            await _journal(seeded, f"done-{n}", JournalState.REPLIED)
        unanswered = await _journal(seeded, "unanswered", JournalState.RECEIVED)
        await _chat(seeded, past, "direct:old")
    finally:
        await seeded.close()
    settings = validate(
        {
            "daemon": {
                "state_dir": str(tmp_path),
                "retention_days": 30,
                "conversation_retention_days": 60,
            },
            "admin": {"listen": "127.0.0.1:0"},
            "agents": {"default": {"type": "echo"}},
        }
    )
    daemon = Daemon(settings)
    await daemon.start()
    try:
        deleted = 'channeld_retention_deleted_rows_total{table="journal"} 3.0'
        await wait_until(lambda: deleted in daemon.metrics.render()[0].decode())
        assert daemon.store is not None
        assert await _count(daemon.store, "inbound_journal") == 1
        assert await daemon.store.journal_get(unanswered) is not None
        assert await _count(daemon.store, "conversation") == 1  # 40 days < 60
        # the next run is scheduled, in a task the daemon owns and stops
        assert [t.get_name() for t in asyncio.all_tasks()].count("retention") == 1
    finally:
        await daemon.stop()
    assert [t for t in asyncio.all_tasks() if t.get_name() == "retention"] == []


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("retention_days", -1),
        ("retention_days", 1.5),
        ("retention_days", "30"),
        ("retention_days", True),
        ("conversation_retention_days", -7),
        ("max_concurrent_answers", 0),
        ("max_concurrent_answers", 2.5),
    ],
)
def test_bad_retention_and_cap_values_name_their_key(key: str, bad: object) -> None:
    with pytest.raises(ConfigurationError, match=rf"daemon\.{key}: .*whole number"):
        validate({"daemon": {key: bad}})


def test_defaults_and_environment_overrides(tmp_path: Path) -> None:
    defaults = validate({}).daemon
    assert (
        defaults.retention_days,
        defaults.conversation_retention_days,
        defaults.max_concurrent_answers,
    ) == (30, 0, 64)
    config = tmp_path / "channeld.toml"
    config.write_text("[daemon]\nretention_days = 7\n")
    environ = {"CHANNELD_DAEMON__CONVERSATION_RETENTION_DAYS": "90"}
    loaded = load(config, environ).daemon
    assert (loaded.retention_days, loaded.conversation_retention_days) == (7, 90)
    with pytest.raises(ConfigurationError, match=r"daemon\.retention_days"):
        load(config, {"CHANNELD_DAEMON__RETENTION_DAYS": "-1"})
