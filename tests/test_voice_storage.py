"""Voice calls and voice turns in the store, on SQLite and PostgreSQL: a retried round stored
once, an interrupted answer trimmed, a call ended once, the call joining the user's text chat,
and the migration that adds them, up from existing rows and back down."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from channels import normalize
from storage import Store
from storage.engine import make_engine
from storage.models import UtcDateTime, metadata
from storage.records import TurnSource, VoiceCallRecord
from tests.backend_support import backend, database_url, postgres
from tests.storage_support import FakeClock, PostgresDatabase, alembic_step, sqlite_url

__all__ = ["backend", "database_url", "postgres"]

IDLE = timedelta(hours=1)
CHANNEL = "ding"
MINUTE = timedelta(minutes=1)


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


async def _sql(store: Store, statement: str, **params: Any) -> list[Any]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(text(statement), params)).all())


async def _text_chat(
    store: Store, now: datetime, *, user: str = "staff-1", key: str = "direct:cid-1"
) -> tuple[str, str]:
    """A user's direct chat as the text path leaves it: (conversation id, user id)."""
    user_id = await store.resolve_user("dingtalk", "corp", user, "Alice")
    conversation, _ = await store.conversation_with_history(
        CHANNEL, key, user_id, idle_reset=IDLE, now=now, limit=0
    )
    await store.append_message(conversation.id, "user", "hello by text", now=now)
    await store.append_message(conversation.id, "assistant", "hello back", now=now)
    return conversation.id, user_id


def _call(
    conversation_id: str,
    user_id: str,
    now: datetime,
    *,
    provider: str = "zego",
    channel_id: str = CHANNEL,
    seconds: int = 1800,
) -> VoiceCallRecord:
    secret = uuid.uuid4().hex
    return VoiceCallRecord(
        id=uuid.uuid4().hex,
        channel_id=channel_id,
        provider=provider,
        conversation_id=conversation_id,
        user_id=user_id,
        platform_user_id="staff-1",
        secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
        started_at=now,
        expires_at=now + timedelta(seconds=seconds),
        details={"room_id": "room-1"},
    )


async def _started_call(store: Store, now: datetime, **kwargs: Any) -> VoiceCallRecord:
    conversation_id, user_id = await _text_chat(store, now)
    call = _call(conversation_id, user_id, now, **kwargs)
    await store.voice_call_add(call)
    return call


# --- voice turns --------------------------------------------------------------------------


async def test_a_retried_round_replaces_its_turns_in_place(store: Store, clock: FakeClock) -> None:
    call = await _started_call(store, clock.now)
    first_at = clock.advance(MINUTE)
    for role, content in (("user", "what time is it"), ("assistant", "It is n")):
        await store.voice_turn_put(
            call.conversation_id,
            call_id=call.id,
            round="7",
            role=role,
            content=content,
            now=first_at,
        )
    await store.voice_turn_put(
        call.conversation_id, call_id=call.id, round="8", role="user", content="and", now=first_at
    )
    retried_at = clock.advance(MINUTE)
    await store.voice_turn_put(
        call.conversation_id,
        call_id=call.id,
        round="7",
        role="assistant",
        content="It is noon.",
        now=retried_at,
        interrupted=True,
    )

    history = await store.recent_messages(call.conversation_id, 10)
    assert [(m.source, m.voice_round, m.role, m.content, m.interrupted) for m in history] == [
        (TurnSource.TEXT, None, "user", "hello by text", False),
        (TurnSource.TEXT, None, "assistant", "hello back", False),
        (TurnSource.VOICE, "7", "user", "what time is it", False),
        (TurnSource.VOICE, "7", "assistant", "It is noon.", True),  # replaced, same place
        (TurnSource.VOICE, "8", "user", "and", False),
    ]
    assert {m.voice_call_id for m in history[2:]} == {call.id}
    assert history[3].created_at == first_at  # the round's first time stays
    conversation = await store.get_conversation(call.conversation_id)
    assert conversation is not None and conversation.last_activity_at == retried_at
    assert await store.voice_rounds(call.id) == {("7", "user"), ("7", "assistant"), ("8", "user")}
    with pytest.raises(LookupError):
        await store.voice_turn_put(
            "no-such-conversation",
            call_id=call.id,
            round="9",
            role="user",
            content="x",
            now=first_at,
        )


async def test_text_turns_never_collide_on_the_voice_key(store: Store, clock: FakeClock) -> None:
    conversation_id, _ = await _text_chat(store, clock.now)
    # the same role twice with no call and no round: NULLs are distinct, both stay
    await store.append_message(conversation_id, "user", "hello by text", now=clock.now)
    history = await store.recent_messages(conversation_id, 10)
    assert [(m.role, m.source, m.voice_call_id, m.voice_round) for m in history] == [
        ("user", TurnSource.TEXT, None, None),
        ("assistant", TurnSource.TEXT, None, None),
        ("user", TurnSource.TEXT, None, None),
    ]


async def test_an_interruption_trims_the_answer_or_only_marks_it(
    store: Store, clock: FakeClock
) -> None:
    call = await _started_call(store, clock.now)
    spoken_at = clock.advance(MINUTE)
    for round_ in ("1", "2"):
        for role, content in (("user", f"question {round_}"), ("assistant", "A long answer.")):
            await store.voice_turn_put(
                call.conversation_id,
                call_id=call.id,
                round=round_,
                role=role,
                content=content,
                now=spoken_at,
            )

    late = clock.advance(MINUTE)
    assert await store.voice_turn_trim(call.id, "1", text="A long", now=late) is True
    assert await store.voice_turn_trim(call.id, "2", text=None, now=spoken_at) is True
    assert await store.voice_turn_trim(call.id, "3", text="x", now=late) is False
    assert await store.voice_turn_trim("no-such-call", "1", text="x", now=late) is False

    voice = [m for m in await store.recent_messages(call.conversation_id, 10) if m.voice_round]
    assert [(m.voice_round, m.role, m.content, m.interrupted) for m in voice] == [
        ("1", "user", "question 1", False),
        ("1", "assistant", "A long", True),
        ("2", "user", "question 2", False),
        ("2", "assistant", "A long answer.", True),
    ]
    # the later trim moved the activity time; the earlier one did not move it back
    conversation = await store.get_conversation(call.conversation_id)
    assert conversation is not None and conversation.last_activity_at == late
    last = await store.voice_turn_last(call.id, "assistant")
    assert last is not None and (last.voice_round, last.content) == ("2", "A long answer.")
    last_user = await store.voice_turn_last(call.id, "user")
    assert last_user is not None and last_user.content == "question 2"
    assert await store.voice_turn_last("no-such-call", "user") is None
    assert await store.voice_rounds("no-such-call") == set()


async def test_voice_turns_are_history_for_the_next_text_answer(
    store: Store, clock: FakeClock
) -> None:
    call = await _started_call(store, clock.now)
    await store.voice_turn_put(
        call.conversation_id,
        call_id=call.id,
        round="1",
        role="user",
        content="spoken",
        now=clock.now,
    )
    conversation_id, user_id = call.conversation_id, call.user_id
    conversation, history = await store.conversation_with_history(
        CHANNEL, "direct:cid-1", user_id, idle_reset=IDLE, now=clock.now, limit=2
    )
    assert conversation.id == conversation_id
    assert [(m.content, m.source, m.voice_call_id) for m in history] == [
        ("hello back", TurnSource.TEXT, None),
        ("spoken", TurnSource.VOICE, call.id),
    ]


async def test_normalised_voice_text_is_stored_alike_on_both_backends(
    store: Store, clock: FakeClock
) -> None:
    call = await _started_call(store, clock.now)
    heard = normalize.text("caf\u00e9 \x00\udcff \U0001f600 \u4f60\u597d")
    await store.voice_turn_put(
        call.conversation_id, call_id=call.id, round="1", role="user", content=heard, now=clock.now
    )
    [(content,)] = await _sql(store, "SELECT content FROM message WHERE voice_round = '1'")
    assert content == "caf\u00e9 \ufffd \U0001f600 \u4f60\u597d"


# --- voice calls --------------------------------------------------------------------------


async def test_a_call_ends_once_when_two_enders_race(store: Store, clock: FakeClock) -> None:
    call = await _started_call(store, clock.now)
    assert (await store.voice_call_get(call.id)) == call
    assert call.active(clock.now)
    ended_at = clock.advance(MINUTE)

    results = await asyncio.gather(
        store.voice_call_end(call.id, reason="hangup", now=ended_at),
        store.voice_call_end(call.id, reason="agent_stop", now=ended_at),
    )

    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    [ended] = winners
    assert (ended.id, ended.ended_at, ended.secret_hash) == (call.id, ended_at, call.secret_hash)
    assert ended.end_reason in {"hangup", "agent_stop"}
    assert not ended.active(ended_at)
    assert await store.voice_call_get(call.id) == ended
    later = clock.advance(MINUTE)
    assert await store.voice_call_end(call.id, reason="expired", now=later) is None
    assert await store.voice_call_end("no-such-call", reason="hangup", now=later) is None


async def test_active_calls_include_expired_ones_not_yet_ended(
    store: Store, clock: FakeClock
) -> None:
    start = clock.now
    conversation_id, user_id = await _text_chat(store, start)
    short = _call(conversation_id, user_id, start, seconds=60)
    long = _call(conversation_id, user_id, start + MINUTE, provider="aliyun")
    ended = _call(conversation_id, user_id, start)
    elsewhere = _call(conversation_id, user_id, start + 2 * MINUTE, channel_id="lark")
    for call in (short, long, ended, elsewhere):
        await store.voice_call_add(call)
    await store.voice_call_end(ended.id, reason="hangup", now=start)

    now = clock.advance(2 * MINUTE)
    active = await store.voice_calls_active()
    assert [c.id for c in active] == [short.id, long.id, elsewhere.id]
    assert [c.active(now) for c in active] == [False, True, True]  # the caller decides
    assert [c.id for c in await store.voice_calls_active(CHANNEL)] == [short.id, long.id]
    assert await store.voice_calls_active("wecom") == []


async def test_a_call_is_found_by_its_secret_and_its_instance(
    store: Store, clock: FakeClock
) -> None:
    call = await _started_call(store, clock.now)
    assert await store.voice_call_by_secret(call.secret_hash) == call
    assert await store.voice_call_by_secret(hashlib.sha256(b"wrong").hexdigest()) is None
    assert await store.voice_call_by_instance("zego", "inst-1") is None

    details = {"room_id": "room-1", "agent_instance_id": "inst-1"}
    assert await store.voice_call_started(call.id, instance_id="inst-1", details=details)
    found = await store.voice_call_by_instance("zego", "inst-1")
    assert found is not None and (found.id, found.details) == (call.id, details)
    assert await store.voice_call_by_instance("aliyun", "inst-1") is None
    # a cloud that reuses an instance id: the latest call is the one meant
    later = _call(call.conversation_id, call.user_id, clock.advance(MINUTE))
    await store.voice_call_add(later)
    await store.voice_call_started(later.id, instance_id="inst-1", details={})
    found = await store.voice_call_by_instance("zego", "inst-1")
    assert found is not None and found.id == later.id
    assert not await store.voice_call_started("no-such-call", instance_id="x", details={})
    # a call ended while the cloud started it (a DELETE meanwhile) keeps no instance
    await store.voice_call_end(later.id, reason="stopped", now=clock.now)
    assert not await store.voice_call_started(later.id, instance_id="inst-2", details={})
    assert await store.voice_call_by_instance("zego", "inst-2") is None


async def test_an_interrupted_turn_is_kept_when_asked(store: Store, clock: FakeClock) -> None:
    call = await _started_call(store, clock.now)
    put = functools.partial(
        store.voice_turn_put, call.conversation_id, call_id=call.id, round="7", role="assistant"
    )
    await put(content="Heard part", now=clock.now, interrupted=True)
    await put(content="Heard part and the rest", now=clock.now, keep_interrupted=True)
    turns = await store.recent_messages(call.conversation_id, 1)
    assert [(t.content, t.interrupted) for t in turns] == [("Heard part", True)]
    await put(content="A retried answer", now=clock.now)  # a retried round replaces it
    turns = await store.recent_messages(call.conversation_id, 1)
    assert [(t.content, t.interrupted) for t in turns] == [("A retried answer", False)]


async def test_deleting_old_conversations_takes_their_calls_and_turns(
    store: Store, clock: FakeClock
) -> None:
    call = await _started_call(store, clock.now)
    await store.voice_turn_put(
        call.conversation_id, call_id=call.id, round="1", role="user", content="hi", now=clock.now
    )
    await store.voice_call_end(call.id, reason="hangup", now=clock.now)  # a live call is kept
    cutoff = clock.advance(timedelta(days=31))
    assert await store.conversations_prune(cutoff, limit=10) == 1
    assert await store.voice_call_get(call.id) is None
    assert await _sql(store, "SELECT count(*) FROM message") == [(0,)]


async def test_a_conversation_with_a_call_under_way_is_not_pruned(
    store: Store, clock: FakeClock
) -> None:
    start = clock.now
    conversation_id, user_id = await _text_chat(store, start - timedelta(days=40))
    idle_id, _ = await _text_chat(store, start - timedelta(days=40), user="staff-2", key="k2")
    call = _call(conversation_id, user_id, start)
    await store.voice_call_add(call)
    # the call's start is activity of its conversation; a later activity is not moved back
    conversation = await store.get_conversation(conversation_id)
    assert conversation is not None and conversation.last_activity_at == start
    await store.voice_call_add(_call(conversation_id, user_id, start - MINUTE))
    conversation = await store.get_conversation(conversation_id)
    assert conversation is not None and conversation.last_activity_at == start

    # a call longer than retention, or a clock far ahead: a call under way keeps it
    cutoff = clock.advance(timedelta(days=31))
    assert await store.conversations_prune(cutoff) == 1  # the idle one only
    assert await store.get_conversation(idle_id) is None
    assert await store.get_conversation(conversation_id) is not None
    for active in await store.voice_calls_active():
        await store.voice_call_end(active.id, reason="hangup", now=cutoff)
    assert await store.conversations_prune(cutoff, limit=10) == 1
    assert await store.get_conversation(conversation_id) is None


async def test_a_conversations_calls_and_voice_turns_across_calls(
    store: Store, clock: FakeClock
) -> None:
    start = clock.now
    conversation_id, user_id = await _text_chat(store, start)
    later = _call(conversation_id, user_id, start + 2 * MINUTE, provider="aliyun")
    earlier = _call(conversation_id, user_id, start)
    elsewhere_id, elsewhere_user = await _text_chat(store, start, user="staff-2", key="k2")
    elsewhere = _call(elsewhere_id, elsewhere_user, start + MINUTE)
    for call in (later, earlier, elsewhere):
        await store.voice_call_add(call)
    await store.voice_call_end(earlier.id, reason="hangup", now=start + MINUTE)

    calls = await store.voice_calls_of_conversation(conversation_id)
    assert [(c.id, c.ended_at) for c in calls] == [(earlier.id, start + MINUTE), (later.id, None)]
    assert await store.voice_calls_of_conversation("no-such-conversation") == []

    for call, round_, role, content in (
        (earlier, "1", "user", "first call"),
        (earlier, "1", "assistant", "first answer"),
        (later, "1", "user", "second call"),
        (later, "1", "assistant", "second answer"),
        (elsewhere, "1", "user", "another conversation"),
    ):
        await store.voice_turn_put(
            call.conversation_id,
            call_id=call.id,
            round=round_,
            role=role,
            content=content,
            now=clock.now,
        )
    await store.append_message(conversation_id, "user", "typed after", now=clock.now)

    turns = await store.voice_turns_of_conversation(conversation_id, 10)
    assert [(t.voice_call_id, t.content) for t in turns] == [
        (earlier.id, "first call"),
        (earlier.id, "first answer"),
        (later.id, "second call"),
        (later.id, "second answer"),
    ]
    latest = await store.voice_turns_of_conversation(conversation_id, 1)
    assert [t.content for t in latest] == ["second answer"]
    found = await store.voice_turn_get(later.id, "1", "assistant")
    assert found is not None and (found.content, found.voice_call_id) == ("second answer", later.id)
    assert await store.voice_turn_get(later.id, "2", "assistant") is None
    assert await store.voice_turn_get(elsewhere.id, "1", "assistant") is None


# --- the conversation a call joins --------------------------------------------------------


async def test_a_call_joins_the_users_text_chat(store: Store, clock: FakeClock) -> None:
    start = clock.now
    conversation_id, user_id = await _text_chat(store, start)
    # a group conversation of the same user, more recently active, is not theirs alone
    group, _ = await store.conversation_with_history(
        CHANNEL, "group:g1:staff-1", user_id, idle_reset=IDLE, now=start + MINUTE, limit=0
    )
    now = clock.advance(30 * MINUTE)

    joined, joined_user = await store.conversation_for_user(
        CHANNEL, platform="dingtalk", platform_user_id="staff-1", idle_reset=IDLE, now=now
    )

    assert (joined.id, joined_user) == (conversation_id, user_id)
    assert joined.id != group.id
    # another channel has no chat with them: one is opened there, for the same user
    there, there_user = await store.conversation_for_user(
        "lark", platform="dingtalk", platform_user_id="staff-1", idle_reset=IDLE, now=now
    )
    assert (there.channel_id, there.key, there_user) == ("lark", "direct:staff-1", user_id)


async def test_a_call_after_a_long_silence_opens_a_new_conversation(
    store: Store, clock: FakeClock
) -> None:
    conversation_id, user_id = await _text_chat(store, clock.now)
    now = clock.advance(2 * IDLE)

    joined, joined_user = await store.conversation_for_user(
        CHANNEL, platform="dingtalk", platform_user_id="staff-1", idle_reset=IDLE, now=now
    )

    assert joined.id != conversation_id
    assert (joined.key, joined.user_id, joined_user, joined.created_at) == (
        "direct:cid-1",
        user_id,
        user_id,
        now,
    )
    old = await store.get_conversation(conversation_id)
    assert old is not None and old.closed_at == now
    # the text chat continues in the conversation the call opened
    text_chat, _ = await store.conversation_with_history(
        CHANNEL, "direct:cid-1", user_id, idle_reset=IDLE, now=now, limit=10
    )
    assert text_chat.id == joined.id


async def test_a_stranger_gets_a_user_and_a_conversation_once(
    store: Store, clock: FakeClock
) -> None:
    results = await asyncio.gather(
        *(
            store.conversation_for_user(
                CHANNEL, platform="zim", platform_user_id="u-42", idle_reset=IDLE, now=clock.now
            )
            for _ in range(5)
        )
    )
    assert len({(c.id, user) for c, user in results}) == 1
    [(conversation, user_id)] = {(c, u) for c, u in results}
    assert (conversation.key, conversation.user_id) == ("direct:u-42", user_id)
    assert await _sql(store, "SELECT tenant, display_name FROM platform_identity") == [("", "")]
    # the same user on their text path (tenant "") keeps that conversation
    assert await store.resolve_user("zim", "", "u-42", "") == user_id


async def test_a_known_user_without_a_chat_keeps_their_identity(
    store: Store, clock: FakeClock
) -> None:
    user_id = await store.resolve_user("dingtalk", "corp", "staff-9", "Bob")
    conversation, joined_user = await store.conversation_for_user(
        CHANNEL, platform="dingtalk", platform_user_id="staff-9", idle_reset=IDLE, now=clock.now
    )
    assert (conversation.key, joined_user) == ("direct:staff-9", user_id)
    assert await _sql(store, "SELECT count(*) FROM user_account") == [(1,)]


# --- the migration ------------------------------------------------------------------------


@pytest.fixture
async def empty_url(backend: str, tmp_path: Path, postgres: PostgresDatabase) -> str:
    """A database with no tables."""
    if backend == "sqlite":
        return sqlite_url(tmp_path / "channeld.db")
    return await postgres.empty()


def _schema(conn: Connection) -> tuple[set[str], set[str], list[Any]]:
    inspector = inspect(conn)
    message = {column["name"] for column in inspector.get_columns("message")}
    differences = compare_metadata(MigrationContext.configure(conn), metadata)
    return set(inspector.get_table_names()), message, differences


async def _inspect(url: str) -> tuple[set[str], set[str], list[Any]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_schema)
    finally:
        await engine.dispose()


# the message table as revision 0002 left it, for rows written before the voice columns
_OLD_MESSAGE = sa.table(
    "message",
    sa.column("conversation_id"),
    sa.column("role"),
    sa.column("content"),
    sa.column("journal_id"),
    sa.column("created_at", UtcDateTime),
)
_OLD_USER = sa.table(
    "user_account",
    sa.column("id"),
    sa.column("display_name"),
    sa.column("created_at", UtcDateTime),
    sa.column("updated_at", UtcDateTime),
)
_OLD_CONVERSATION = sa.table(
    "conversation",
    sa.column("id"),
    sa.column("channel_id"),
    sa.column("key"),
    sa.column("user_id"),
    sa.column("created_at", UtcDateTime),
    sa.column("last_activity_at", UtcDateTime),
)
VOICE_COLUMNS = {"source", "voice_call_id", "voice_round", "interrupted"}


async def test_the_migration_keeps_existing_turns_and_goes_down_and_up_again(
    empty_url: str, clock: FakeClock
) -> None:
    await alembic_step(empty_url, "upgrade", "0002")
    old = await Store.open(empty_url, migrate=False, clock=clock)
    try:
        entry_id = await old.journal_accept(CHANNEL, "m1", None, "{}")
        # rows written as revision 0002 knew them (today's models have later columns)
        user_id, conversation_id = "u" * 32, "c" * 32
        async with old.engine.begin() as conn:
            await conn.execute(
                sa.insert(_OLD_USER),
                {
                    "id": user_id,
                    "display_name": "Alice",
                    "created_at": clock.now,
                    "updated_at": clock.now,
                },
            )
            await conn.execute(
                sa.insert(_OLD_CONVERSATION),
                {
                    "id": conversation_id,
                    "channel_id": CHANNEL,
                    "key": "direct:cid-1",
                    "user_id": user_id,
                    "created_at": clock.now,
                    "last_activity_at": clock.now,
                },
            )
            await conn.execute(
                sa.insert(_OLD_MESSAGE),
                [
                    {
                        "conversation_id": conversation_id,
                        "role": role,
                        "content": content,
                        "journal_id": entry_id if role == "user" else None,
                        "created_at": clock.now,
                    }
                    for role, content in (("user", "typed before"), ("assistant", "answered"))
                ],
            )
    finally:
        await old.close()

    await alembic_step(empty_url, "upgrade", "head")
    tables, columns, differences = await _inspect(empty_url)
    assert "voice_call" in tables and columns >= VOICE_COLUMNS
    assert differences == [], "models and migrations disagree"
    store = await Store.open(empty_url, migrate=False, clock=clock)
    try:
        history = await store.recent_messages(conversation_id, 10)
        assert [(m.content, m.journal_id, m.source, m.interrupted) for m in history] == [
            ("typed before", entry_id, TurnSource.TEXT, False),
            ("answered", None, TurnSource.TEXT, False),
        ]
        call = _call(conversation_id, user_id, clock.now)
        await store.voice_call_add(call)
        for content in ("first", "again"):  # the rebuilt table still has its unique key
            await store.voice_turn_put(
                conversation_id,
                call_id=call.id,
                round="1",
                role="user",
                content=content,
                now=clock.now,
            )
        assert len(await store.recent_messages(conversation_id, 10)) == 3
    finally:
        await store.close()

    await alembic_step(empty_url, "downgrade", "0002")
    tables, columns, _ = await _inspect(empty_url)
    assert "voice_call" not in tables and not VOICE_COLUMNS & columns
    engine = make_engine(empty_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT content FROM message ORDER BY id"))).all()
    finally:
        await engine.dispose()
    assert [r.content for r in rows] == ["typed before", "answered", "again"]

    await alembic_step(empty_url, "upgrade", "head")
    tables, columns, differences = await _inspect(empty_url)
    assert "voice_call" in tables and columns >= VOICE_COLUMNS and differences == []
