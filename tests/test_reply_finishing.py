"""The complete answer stored ahead of its final text, on SQLite and PostgreSQL: one statement,
linked to its journal row so recovery finds it, kept once the reply ends well, gone when it
fails or when its message is answered anew."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import event

from storage import JournalState, Store
from storage.repository import AnswerTurn
from tests.backend_support import backend, database_url, postgres
from tests.storage_support import FakeClock

__all__ = ["backend", "database_url", "postgres"]

IDLE = timedelta(hours=1)


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


async def replying(store: Store, clock: FakeClock, message_id: str) -> tuple[int, str]:
    """A journal row being answered in a conversation: (row id, conversation id)."""
    user = await store.resolve_user("dingtalk", "corp", "u1", "Alice")
    conversation, _ = await store.conversation_with_history(
        "ding", "direct:c1", user, idle_reset=IDLE, now=clock.now, limit=10
    )
    entry_id = await store.journal_accept("ding", message_id, None, "{}")
    assert entry_id is not None
    await store.reply_begun(
        entry_id, conversation.id, card_id="card-" + message_id, question="hi", now=clock.now
    )
    return entry_id, conversation.id


async def turns(store: Store, conversation_id: str) -> list[tuple[str, str, int | None]]:
    return [
        (t.role, t.content, t.journal_id) for t in await store.recent_messages(conversation_id, 10)
    ]


async def test_the_answer_is_stored_with_its_row_in_one_statement_and_kept_once(
    store: Store, clock: FakeClock
) -> None:
    entry_id, conversation_id = await replying(store, clock, "m1")
    assert await store.finishing_answer(entry_id) is None
    begun: list[object] = []
    statements: list[str] = []
    event.listen(store.engine.sync_engine, "begin", begun.append)
    event.listen(
        store.engine.sync_engine,
        "before_cursor_execute",
        lambda _conn, _cursor, statement, *_: statements.append(statement.split()[0]),
    )
    await store.reply_finishing(entry_id, AnswerTurn(conversation_id, "hello", clock.now))
    # the final text waits for this write: one transaction, one statement besides its BEGIN
    assert len(begun) == 1
    assert [s for s in statements if s != "BEGIN"] == ["INSERT"]
    assert await store.finishing_answer(entry_id) == "hello"
    entry = await store.journal_get(entry_id)
    assert entry is not None and entry.state is JournalState.REPLYING  # not answered yet
    before = clock.now

    # the outcome's write moves the conversation's activity time, off the final text's path
    replied_at = clock.advance(timedelta(seconds=2))
    await store.reply_ended(entry_id, state=JournalState.REPLIED, delivered_text="hello")
    entry = await store.journal_get(entry_id)
    assert entry is not None and entry.state is JournalState.REPLIED
    active = await store.get_conversation(conversation_id)
    assert active is not None and active.last_activity_at == replied_at != before
    assert await turns(store, conversation_id) == [
        ("user", "hi", entry_id),
        ("assistant", "hello", entry_id),
    ]


async def test_a_resumed_message_answered_anew_replaces_the_answer_an_earlier_run_stored(
    store: Store, clock: FakeClock
) -> None:
    entry_id, conversation_id = await replying(store, clock, "m1")
    await store.reply_finishing(entry_id, AnswerTurn(conversation_id, "a draft", clock.now))
    # the restart's recovery answers it again: its turn is stored already (question None)
    await store.reply_begun(
        entry_id, conversation_id, card_id="card-2", question=None, now=clock.now
    )
    assert await store.finishing_answer(entry_id) is None
    await store.reply_finishing(entry_id, AnswerTurn(conversation_id, "hello", clock.now))
    assert await store.finishing_answer(entry_id) == "hello"
    assert await turns(store, conversation_id) == [
        ("user", "hi", entry_id),
        ("assistant", "hello", entry_id),
    ]


async def test_a_failed_reply_forgets_its_stored_answer_and_only_its_own(
    store: Store, clock: FakeClock
) -> None:
    kept, conversation_id = await replying(store, clock, "m1")
    await store.reply_finishing(kept, AnswerTurn(conversation_id, "kept", clock.now))
    failed, _ = await replying(store, clock, "m2")
    await store.reply_finishing(failed, AnswerTurn(conversation_id, "never shown", clock.now))

    await store.reply_ended(
        failed, state=JournalState.FAILED, error="TransientError: 503", forget_answer=True
    )
    entry = await store.journal_get(failed)
    assert entry is not None and entry.state is JournalState.FAILED
    assert await store.finishing_answer(failed) is None
    assert await store.finishing_answer(kept) == "kept"
    assert [t[:2] for t in await turns(store, conversation_id)] == [
        ("user", "hi"),
        ("assistant", "kept"),
        ("user", "hi"),
    ]
