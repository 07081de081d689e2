"""The per-reply writes of the store, on SQLite and PostgreSQL: the conversation with its history
in one read, `reply_begun` and `reply_ended` each one transaction that never half-happens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from storage import JournalState, Store
from storage.repository import AnswerTurn
from tests.backend_support import backend, database_url, postgres
from tests.storage_support import FakeClock

__all__ = ["backend", "database_url", "postgres"]

IDLE = timedelta(hours=1)
KEY = "direct:c1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(database_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await Store.open(database_url, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


class Transactions:
    """Counts the transactions the store's engine begins."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        event.listen(store.engine.sync_engine, "begin", self._begun)

    def _begun(self, _connection: object) -> None:
        self.count += 1


async def _accepted(store: Store, message_id: str) -> int:
    entry_id = await store.journal_accept("ding", message_id, None, "{}")
    assert entry_id is not None
    return entry_id


async def test_an_open_conversation_and_its_history_cost_one_read(
    store: Store, clock: FakeClock
) -> None:
    user = await store.resolve_user("dingtalk", "corp", "u1", "Alice")
    opened, history = await store.conversation_with_history(
        "ding", KEY, user, idle_reset=IDLE, now=clock.now, limit=3
    )
    assert history == []
    for turn in range(5):
        await store.append_message(opened.id, "user", f"turn {turn}", now=clock.now)
    transactions = Transactions(store)
    again, history = await store.conversation_with_history(
        "ding", KEY, user, idle_reset=IDLE, now=clock.advance(timedelta(minutes=5)), limit=3
    )
    assert transactions.count == 1
    assert again.id == opened.id
    assert [m.content for m in history] == ["turn 2", "turn 3", "turn 4"]  # the last, in order


async def test_an_idle_conversation_gives_way_to_a_new_one_without_history(
    store: Store, clock: FakeClock
) -> None:
    user = await store.resolve_user("dingtalk", "corp", "u1", "Alice")
    first, _ = await store.conversation_with_history(
        "ding", KEY, user, idle_reset=IDLE, now=clock.now, limit=10
    )
    await store.append_message(first.id, "user", "old", now=clock.now)
    fresh, history = await store.conversation_with_history(
        "ding", KEY, user, idle_reset=IDLE, now=clock.advance(IDLE * 2), limit=10
    )
    assert fresh.id != first.id
    assert history == []
    closed = await store.get_conversation(first.id)
    assert closed is not None and closed.closed_at is not None


async def test_reply_begun_moves_the_row_and_stores_the_question_together(
    store: Store, clock: FakeClock
) -> None:
    user = await store.resolve_user("dingtalk", "corp", "u1", "Alice")
    conversation, _ = await store.conversation_with_history(
        "ding", KEY, user, idle_reset=IDLE, now=clock.now, limit=10
    )
    entry_id = await _accepted(store, "m1")
    transactions = Transactions(store)
    await store.reply_begun(
        entry_id, conversation.id, card_id="card-1", question="hello", now=clock.now
    )
    assert transactions.count == 1
    entry = await store.journal_get(entry_id)
    assert entry is not None
    assert (entry.state, entry.conversation_id, entry.card_id) == (
        JournalState.REPLYING,
        conversation.id,
        "card-1",
    )
    [turn] = await store.recent_messages(conversation.id, 10)
    assert (turn.role, turn.content, turn.journal_id) == ("user", "hello", entry_id)

    resumed = await _accepted(store, "m2")
    await store.reply_begun(resumed, conversation.id, card_id=None, question=None, now=clock.now)
    entry = await store.journal_get(resumed)
    assert entry is not None and entry.state is JournalState.REPLYING and entry.card_id is None
    assert len(await store.recent_messages(conversation.id, 10)) == 1  # no turn for a resumed one


async def test_reply_begun_for_a_lost_conversation_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    # e.g. pruned while the LLM thought: the row's link to it is refused (a foreign key)
    entry_id = await _accepted(store, "m1")
    with pytest.raises(IntegrityError):
        await store.reply_begun(entry_id, "gone", card_id="card-1", question="hi", now=clock.now)
    entry = await store.journal_get(entry_id)
    assert entry is not None
    assert (entry.state, entry.card_id) == (JournalState.RECEIVED, None)  # rolled back together


async def test_reply_ended_records_the_outcome_with_the_answer_or_not_at_all(
    store: Store, clock: FakeClock
) -> None:
    user = await store.resolve_user("dingtalk", "corp", "u1", "Alice")
    conversation, _ = await store.conversation_with_history(
        "ding", KEY, user, idle_reset=IDLE, now=clock.now, limit=10
    )
    entry_id = await _accepted(store, "m1")
    await store.reply_begun(entry_id, conversation.id, card_id=None, question="hi", now=clock.now)

    with pytest.raises(LookupError, match="conversation"):
        await store.reply_ended(
            entry_id,
            state=JournalState.REPLIED,
            delivered_text="hello",
            answer=AnswerTurn("gone", "hello", clock.now),
        )
    entry = await store.journal_get(entry_id)
    assert entry is not None and entry.state is JournalState.REPLYING  # nothing half-done

    transactions = Transactions(store)
    answered_at = clock.advance(timedelta(seconds=3))
    await store.reply_ended(
        entry_id,
        state=JournalState.REPLIED,
        delivered_text="hello",
        answer=AnswerTurn(conversation.id, "hello", answered_at),
    )
    assert transactions.count == 1
    entry = await store.journal_get(entry_id)
    assert entry is not None
    assert (entry.state, entry.delivered_text, entry.error) == (JournalState.REPLIED, "hello", None)
    turns = await store.recent_messages(conversation.id, 10)
    assert [(t.role, t.content) for t in turns] == [("user", "hi"), ("assistant", "hello")]
    active = await store.get_conversation(conversation.id)
    assert active is not None and active.last_activity_at == answered_at

    failed = await _accepted(store, "m2")
    await store.reply_ended(failed, state=JournalState.FAILED, error="RateLimited: 429")
    entry = await store.journal_get(failed)
    assert entry is not None
    assert (entry.state, entry.error, entry.delivered_text) == (
        JournalState.FAILED,
        "RateLimited: 429",
        "",
    )
