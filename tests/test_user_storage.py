"""People in the store, on SQLite and PostgreSQL: a directory entry is one user whatever the
platform, identities linked and unlinked by hand, search, blocking told once per period, and the
migration that adds them, up from existing users and back down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection

from storage import Store
from storage.engine import make_engine
from storage.models import UtcDateTime, metadata
from storage.records import IdentityRecord, UserRecord
from tests.backend_support import backend, database_url, postgres
from tests.storage_support import FakeClock, PostgresDatabase, alembic_step, sqlite_url

__all__ = ["backend", "database_url", "postgres"]

IDLE = timedelta(hours=1)
DAY = timedelta(days=1)
ALICE_DN = "ldap:uid=alice,ou=people,dc=example,dc=com"


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


async def _person(store: Store, clock: FakeClock, **fields: Any) -> str:
    person: dict[str, Any] = {
        "directory_id": ALICE_DN,
        "name": "Alice Smith",
        "email": "alice@example.com",
        "groups": ["staff"],
        "auth_source": "ldap",
        "now": clock.now,
    }
    return await store.user_for_person(**(person | fields))


async def _user(store: Store, user_id: str) -> tuple[UserRecord, list[IdentityRecord]]:
    found = await store.get_user(user_id)
    assert found is not None
    return found


class Statements:
    """The SQL statements the store sends while counting."""

    def __init__(self, store: Store) -> None:
        self.seen: list[str] = []
        self._engine = store.engine.sync_engine

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(statement)

    def __enter__(self) -> Statements:
        event.listen(self._engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self._engine, "before_cursor_execute", self._count)

    @property
    def writes(self) -> list[str]:
        """The INSERT and UPDATE statements (not SELECT ... FOR UPDATE)."""
        return [s for s in self.seen if s.lstrip().upper().startswith(("INSERT", "UPDATE"))]


# --- people from a directory --------------------------------------------------------------


async def test_a_directory_entry_is_one_user_that_follows_the_directory(
    store: Store, clock: FakeClock
) -> None:
    alice = await _person(store, clock)
    assert await _person(store, clock) == alice
    user, identities = await _user(store, alice)
    assert (user.display_name, user.email, user.groups, user.auth_source, user.directory_id) == (
        "Alice Smith",
        "alice@example.com",
        ("staff",),
        "ldap",
        ALICE_DN,
    )
    assert identities == []
    assert (user.blocked, user.blocked_notice_at, user.last_seen_at) == (False, None, None)

    later = clock.advance(timedelta(minutes=5))
    same = await _person(
        store, clock, name="Alice Jones", email=" Alice.Jones@Example.COM ", groups=["staff", "ops"]
    )
    assert same == alice
    user, _ = await _user(store, alice)
    assert (user.display_name, user.email, user.groups, user.updated_at) == (
        "Alice Jones",
        "alice.jones@example.com",  # trimmed and lower-cased
        ("staff", "ops"),
        later,
    )
    # An empty name keeps the known one; an unchanged entry writes nothing.
    assert (
        await _person(
            store, clock, name="", email="alice.jones@example.com", groups=["staff", "ops"]
        )
        == alice
    )
    with Statements(store) as statements:
        await _person(
            store,
            clock,
            name="Alice Jones",
            email="alice.jones@example.com",
            groups=["staff", "ops"],
        )
    assert statements.writes == []
    assert await _sql(store, "SELECT count(*) FROM user_account") == [(1,)]


async def test_a_person_found_by_email_takes_the_new_directory_id(
    store: Store, clock: FakeClock
) -> None:
    alice = await _person(store, clock)
    moved_dn = "ldap:uid=alice,ou=finance,dc=example,dc=com"  # moved to another OU
    assert await _person(store, clock, directory_id=moved_dn, email="ALICE@example.com") == alice
    user, _ = await _user(store, alice)
    assert user.directory_id == moved_dn
    # The old DN is nobody's now: a new person who gets it is a new user.
    bob = await _person(store, clock, directory_id=ALICE_DN, name="Bob", email="bob@example.com")
    assert bob != alice


async def test_an_email_another_user_holds_stays_with_them(store: Store, clock: FakeClock) -> None:
    alice = await _person(store, clock)
    bob = await _person(store, clock, directory_id="http:42", name="Bob", email="bob@example.com")
    # Bob's entry now claims Alice's address: Bob stays Bob, keeps his own address, and Alice
    # keeps hers (no constraint error, no merge).
    again = await _person(
        store, clock, directory_id="http:42", name="Bob", email="alice@example.com"
    )
    assert again == bob
    assert (await _user(store, bob))[0].email == "bob@example.com"
    assert (await _user(store, alice))[0].email == "alice@example.com"
    nobody = await _person(store, clock, directory_id="file:carol", name="Carol", email="")
    assert (await _user(store, nobody))[0].email is None


async def test_what_does_not_fit_its_column_is_cut_dropped_or_refused(
    store: Store, clock: FakeClock
) -> None:
    long_name = "A" * 300
    user_id = await _person(store, clock, name=long_name, email="a" * 310 + "@example.com")
    user, _ = await _user(store, user_id)
    assert (user.display_name, user.email) == ("A" * 255, None)
    with pytest.raises(ValueError, match="directory id longer than 255"):
        await _person(store, clock, directory_id="ldap:" + "x" * 251)


async def test_concurrent_lookups_of_one_person_make_one_user(
    store: Store, clock: FakeClock
) -> None:
    ids = await asyncio.gather(*(_person(store, clock) for _ in range(10)))
    assert len(set(ids)) == 1
    assert await _sql(store, "SELECT count(*) FROM user_account") == [(1,)]


# --- identities ---------------------------------------------------------------------------


async def test_identities_on_two_platforms_link_to_one_person(
    store: Store, clock: FakeClock
) -> None:
    # Before any directory: each account is its own auto user with its own conversation.
    ding = await store.resolve_user("dingtalk", "corp", "staff-1", "Alice D")
    conversation, _ = await store.conversation_with_history(
        "ding", "direct:c1", ding, idle_reset=IDLE, now=clock.now, limit=0
    )
    alice = await _person(store, clock)
    await store.link_identity(
        "dingtalk", "corp", "staff-1", alice, display_name="Alice D", now=clock.now
    )
    await store.link_identity(
        "feishu", "tenant", "ou_1", alice, display_name="Alice F", now=clock.now
    )

    owner = await store.identity_owner("feishu", "tenant", "ou_1")
    assert owner is not None and owner.id == alice
    assert await store.identity_owner("feishu", "other-tenant", "ou_1") is None
    user, identities = await _user(store, alice)
    assert user.email == "alice@example.com"
    assert [(i.platform, i.tenant, i.platform_user_id, i.display_name) for i in identities] == [
        ("dingtalk", "corp", "staff-1", "Alice D"),
        ("feishu", "tenant", "ou_1", "Alice F"),
    ]
    # The auto user stays, with its conversation, and no identity.
    previous = await _user(store, ding)
    assert previous[1] == []
    assert (await store.get_conversation(conversation.id)) == conversation
    # resolve_user remembered the account's old user; the link made it forget.
    assert await store.resolve_user("dingtalk", "corp", "staff-1", "Alice D") == alice
    identity = await store.get_identity(identities[1].id)
    assert identity == identities[1]
    assert await store.get_identity(identities[1].id + 1000) is None


async def test_a_platform_name_change_renames_the_identity_not_the_directory_person(
    store: Store, clock: FakeClock
) -> None:
    alice = await _person(store, clock)
    await store.link_identity("dingtalk", "corp", "s1", alice, display_name="Ali", now=clock.now)
    assert await store.resolve_user("dingtalk", "corp", "s1", "Ali 2") == alice
    user, identities = await _user(store, alice)
    assert (user.display_name, [i.display_name for i in identities]) == ("Alice Smith", ["Ali 2"])


async def test_linking_to_an_unknown_user_fails_and_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    ding = await store.resolve_user("dingtalk", "corp", "staff-1", "Alice")
    with pytest.raises(LookupError, match="nobody"):
        await store.link_identity(
            "dingtalk", "corp", "staff-1", "nobody", display_name="", now=clock.now
        )
    owner = await store.identity_owner("dingtalk", "corp", "staff-1")
    assert owner is not None and owner.id == ding


async def test_relinking_keeps_the_name_when_none_is_given(store: Store, clock: FakeClock) -> None:
    alice = await _person(store, clock)
    await store.link_identity("zim", "", "u-1", alice, display_name="Al", now=clock.now)
    with Statements(store) as statements:
        await store.link_identity("zim", "", "u-1", alice, display_name="", now=clock.now)
    assert statements.writes == []
    _, identities = await _user(store, alice)
    assert [i.display_name for i in identities] == ["Al"]


async def test_concurrent_links_of_a_new_account_make_one_identity(
    store: Store, clock: FakeClock
) -> None:
    alice = await _person(store, clock)
    await asyncio.gather(
        *(
            store.link_identity("feishu", "t", "ou_7", alice, display_name="A", now=clock.now)
            for _ in range(10)
        )
    )
    assert await _sql(store, "SELECT count(*) FROM platform_identity") == [(1,)]


async def test_unlinking_gives_the_identity_a_fresh_user_of_its_own(
    store: Store, clock: FakeClock
) -> None:
    alice = await _person(store, clock)
    await store.link_identity(
        "dingtalk", "corp", "staff-1", alice, display_name="Alice D", now=clock.now
    )
    await store.link_identity(
        "feishu", "tenant", "ou_1", alice, display_name="Alice F", now=clock.now
    )
    assert await store.resolve_user("feishu", "tenant", "ou_1", "Alice F") == alice
    _, identities = await _user(store, alice)

    moved = await store.unlink_identity(identities[1].id)
    assert moved is not None
    assert (moved.id, moved.platform_user_id) == (identities[1].id, "ou_1")
    assert moved.user_id != alice
    fresh, own = await _user(store, moved.user_id)
    assert (fresh.display_name, fresh.auth_source, fresh.email, fresh.directory_id) == (
        "Alice F",
        "auto",
        None,
        None,
    )
    assert own == [moved]
    assert [i.platform for i in (await _user(store, alice))[1]] == ["dingtalk"]
    assert await store.resolve_user("feishu", "tenant", "ou_1", "Alice F") == moved.user_id
    assert await store.unlink_identity(10_000) is None


async def test_unlinking_for_an_owner_leaves_an_identity_that_moved_meanwhile(
    store: Store, clock: FakeClock
) -> None:
    """The admin API checks whose identity it is, then unlinks: a link made in between wins."""
    alice = await _person(store, clock)
    bob = await _person(store, clock, directory_id="file:bob", name="Bob", email="bob@example.com")
    await store.link_identity(
        "dingtalk", "corp", "staff-1", alice, display_name="Alice D", now=clock.now
    )
    [identity] = (await _user(store, alice))[1]
    # checked as Alice's, then moved to Bob before the unlink
    await store.link_identity("dingtalk", "corp", "staff-1", bob, display_name="", now=clock.now)
    assert await store.unlink_identity(identity.id, owner=alice) is None
    assert [i.id for i in (await _user(store, bob))[1]] == [identity.id]  # still Bob's
    assert await store.resolve_user("dingtalk", "corp", "staff-1", "Alice D") == bob

    moved = await store.unlink_identity(identity.id, owner=bob)
    assert moved is not None and moved.user_id not in (alice, bob)
    assert (await _user(store, bob))[1] == []
    assert await store.unlink_identity(10_000, owner=bob) is None


async def _waiting_for_a_row_lock(store: Store) -> None:
    """Returns once a session of this database waits for a lock another one holds."""
    waiting = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with asyncio.timeout(10):
        while await _sql(store, waiting) != [(1,)]:
            await asyncio.sleep(0.01)


@pytest.mark.postgres
async def test_an_unlink_waiting_for_a_link_in_flight_leaves_the_identity_linked(
    postgres: PostgresDatabase, clock: FakeClock
) -> None:
    """PostgreSQL, two replicas: the unlink's locked read waits for the other replica's link to
    commit, then finds the identity no longer the owner's."""
    store = await Store.open(await postgres.clean(), clock=clock)
    try:
        alice = await _person(store, clock)
        bob = await _person(store, clock, directory_id="file:bob", name="Bob", email="b@x.org")
        await store.link_identity(
            "dingtalk", "corp", "staff-1", alice, display_name="A", now=clock.now
        )
        [identity] = (await _user(store, alice))[1]
        async with store.engine.connect() as replica:  # its link, not committed yet
            await replica.execute(
                text("UPDATE platform_identity SET user_id = :bob WHERE id = :id"),
                {"bob": bob, "id": identity.id},
            )
            unlink = asyncio.ensure_future(store.unlink_identity(identity.id, owner=alice))
            await _waiting_for_a_row_lock(store)
            await replica.commit()
        assert await unlink is None
        owner = await store.identity_owner("dingtalk", "corp", "staff-1")
        assert owner is not None and owner.id == bob
    finally:
        await store.close()


async def test_a_persons_conversations_are_the_ones_opened_for_them(
    store: Store, clock: FakeClock
) -> None:
    alice = await store.resolve_user("dingtalk", "corp", "staff-1", "Alice")
    bob = await store.resolve_user("feishu", "tenant", "ou_b", "Bob")
    first, _ = await store.conversation_with_history(
        "ding", "direct:staff-1", alice, idle_reset=IDLE, now=clock.now, limit=5
    )
    clock.advance(timedelta(minutes=1))
    await store.conversation_with_history(
        "lark", "direct:ou_b", bob, idle_reset=IDLE, now=clock.now, limit=5
    )
    later, _ = await store.conversation_with_history(
        "lark", "group:g1", alice, idle_reset=IDLE, now=clock.advance(timedelta(minutes=1)), limit=5
    )
    assert [c.id for c in await store.list_conversations(user_id=alice)] == [later.id, first.id]
    assert [c.id for c in await store.list_conversations("ding", user_id=alice)] == [first.id]
    assert [c.id for c in await store.list_conversations(user_id=alice, limit=1)] == [later.id]
    assert await store.list_conversations(user_id="nobody") == []
    # Bob's Feishu account linked to Alice later: its conversation stays Bob's
    await store.link_identity("feishu", "tenant", "ou_b", alice, display_name="", now=clock.now)
    assert len(await store.list_conversations(user_id=alice)) == 2
    assert len(await store.list_conversations(user_id=bob)) == 1


async def test_get_users_reads_many_at_once(store: Store, clock: FakeClock) -> None:
    alice = await _person(store, clock)
    bob = await store.resolve_user("dingtalk", "corp", "staff-2", "Bob")
    found = await store.get_users([alice, bob, "nobody", alice])
    assert {k: v.display_name for k, v in found.items()} == {alice: "Alice Smith", bob: "Bob"}
    assert await store.get_users([]) == {}
    assert await store.get_user("nobody") is None


async def test_an_auto_user_is_labelled_once(store: Store, clock: FakeClock) -> None:
    ding = await store.resolve_user("dingtalk", "corp", "staff-1", "Alice")
    await store.label_auto_user(
        ding, email="DingTalk-staff-1@im-platform.invalid", auth_source="dingtalk"
    )
    user, _ = await _user(store, ding)
    assert (user.email, user.auth_source) == ("dingtalk-staff-1@im-platform.invalid", "dingtalk")
    await store.label_auto_user(ding, email="other@im-platform.invalid", auth_source="feishu")
    user, _ = await _user(store, ding)
    assert (user.email, user.auth_source) == ("dingtalk-staff-1@im-platform.invalid", "dingtalk")
    # the same address in another tenant is taken: the second user gets the source only
    other = await store.resolve_user("dingtalk", "corp-2", "staff-1", "Alice 2")
    await store.label_auto_user(
        other, email="dingtalk-staff-1@im-platform.invalid", auth_source="dingtalk"
    )
    user, _ = await _user(store, other)
    assert (user.email, user.auth_source) == (None, "dingtalk")
    # a directory's person is never relabelled
    alice = await _person(store, clock, email="a@example.com")
    await store.label_auto_user(alice, email="x@im-platform.invalid", auth_source="dingtalk")
    user, _ = await _user(store, alice)
    assert (user.email, user.auth_source) == ("a@example.com", "ldap")


# --- search -------------------------------------------------------------------------------


async def test_users_are_found_by_name_email_or_platform_id_ignoring_case(
    store: Store, clock: FakeClock
) -> None:
    alice = await _person(store, clock)
    await store.link_identity(
        "feishu", "t", "ou_ALICE_1", alice, display_name="阿丽", now=clock.now
    )
    bob = await store.resolve_user("dingtalk", "corp", "staff_2", "Bob 100%")
    clock.advance(timedelta(minutes=1))
    carol = await store.resolve_user("dingtalk", "corp", "staff-3", "Carol")

    async def found(search: str | None, limit: int = 10) -> list[str]:
        return [u.id for u in await store.list_users(search=search, limit=limit)]

    assert await found("smith") == [alice]
    assert await found("ALICE@EXAMPLE") == [alice]
    assert await found("ou_alice") == [alice]
    assert await found("阿丽") == [alice]
    assert await found("100%") == [bob]  # % is a character, not a wildcard
    assert await found("staff_") == [bob]  # so is _: "staff-3" does not match
    assert await found("%") == [bob]
    assert await found("\\") == []
    assert await found("nobody") == []
    # newest first (seen, else created); limit
    assert await found(None) == [carol, *sorted([alice, bob])]  # a tie goes by id
    assert len(await found(None, limit=2)) == 2
    assert await found(None, limit=0) == []
    await store.touch_user(bob, now=clock.advance(timedelta(minutes=1)))
    assert (await found(None))[0] == bob


# --- blocking and last seen ----------------------------------------------------------------


async def test_a_blocked_user_is_told_at_most_once_a_day(store: Store, clock: FakeClock) -> None:
    alice = await _person(store, clock)
    assert not await store.block_notice_due(alice, now=clock.now, every=DAY)  # not blocked
    blocked = await store.set_blocked(alice, True, now=clock.now)
    assert blocked is not None and blocked.blocked and blocked.updated_at == clock.now

    answers = await asyncio.gather(
        *(store.block_notice_due(alice, now=clock.now, every=DAY) for _ in range(5))
    )
    assert sorted(answers) == [False, False, False, False, True]
    assert (await _user(store, alice))[0].blocked_notice_at == clock.now
    assert not await store.block_notice_due(
        alice, now=clock.advance(DAY - timedelta(seconds=1)), every=DAY
    )
    assert await store.block_notice_due(alice, now=clock.advance(timedelta(seconds=1)), every=DAY)

    # unblocked: nothing to tell; blocked again: told at once
    unblocked = await store.set_blocked(alice, False, now=clock.now)
    assert unblocked is not None and not unblocked.blocked and unblocked.blocked_notice_at is None
    assert not await store.block_notice_due(alice, now=clock.now, every=DAY)
    await store.set_blocked(alice, True, now=clock.now)
    assert await store.block_notice_due(alice, now=clock.now, every=DAY)
    assert await store.set_blocked("nobody", True, now=clock.now) is None
    assert not await store.block_notice_due("nobody", now=clock.now, every=DAY)


async def test_touch_writes_last_seen_at_most_once_a_minute(store: Store, clock: FakeClock) -> None:
    alice = await _person(store, clock)
    first = clock.now
    await store.touch_user(alice, now=first)
    assert (await _user(store, alice))[0].last_seen_at == first
    with Statements(store) as statements:
        await store.touch_user(alice, now=clock.advance(timedelta(seconds=59)))
    assert statements.seen == []
    assert (await _user(store, alice))[0].last_seen_at == first
    later = clock.advance(timedelta(seconds=1))
    await store.touch_user(alice, now=later)
    assert (await _user(store, alice))[0].last_seen_at == later
    # another replica's store, which never touched her, leaves a fresh last_seen alone
    twin = Store(store.engine, clock=clock)
    with Statements(store) as statements:
        await twin.touch_user(alice, now=later + timedelta(seconds=30))
    assert len(statements.writes) == 1
    assert (await _user(store, alice))[0].last_seen_at == later


# --- migration ----------------------------------------------------------------------------


@pytest.fixture
async def empty_url(backend: str, tmp_path: Path, postgres: PostgresDatabase) -> str:
    """A database with no tables."""
    if backend == "sqlite":
        return sqlite_url(tmp_path / "channeld.db")
    return await postgres.empty()


def _schema(conn: Connection) -> tuple[set[str], list[Any]]:
    columns = {column["name"] for column in inspect(conn).get_columns("user_account")}
    return columns, compare_metadata(MigrationContext.configure(conn), metadata)


async def _inspect(url: str) -> tuple[set[str], list[Any]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_schema)
    finally:
        await engine.dispose()


async def _count(url: str, table: str) -> int:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())  # noqa: S608 (a test's own table names)
    finally:
        await engine.dispose()


# the tables as revision 0003 left them, for rows written before the user columns
_OLD_USER = sa.table(
    "user_account",
    sa.column("id"),
    sa.column("display_name"),
    sa.column("created_at", UtcDateTime),
    sa.column("updated_at", UtcDateTime),
)
_OLD_IDENTITY = sa.table(
    "platform_identity",
    sa.column("platform"),
    sa.column("tenant"),
    sa.column("platform_user_id"),
    sa.column("user_id"),
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
USER_COLUMNS = {
    "email",
    "groups",
    "auth_source",
    "directory_id",
    "blocked",
    "blocked_notice_at",
    "last_seen_at",
}


async def test_the_migration_keeps_existing_users_and_goes_down_and_up_again(
    empty_url: str, clock: FakeClock
) -> None:
    await alembic_step(empty_url, "upgrade", "0003")
    engine = make_engine(empty_url)
    now = clock.now
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(_OLD_USER),
                [
                    {"id": user_id, "display_name": name, "created_at": now, "updated_at": now}
                    for user_id, name in (("u" * 32, "Alice"), ("v" * 32, "Bob"))
                ],
            )
            await conn.execute(
                sa.insert(_OLD_IDENTITY),
                [
                    {
                        "platform": "dingtalk",
                        "tenant": "corp",
                        "platform_user_id": staff,
                        "user_id": user_id,
                        "display_name": name,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for staff, user_id, name in (("s1", "u" * 32, "Alice"), ("s2", "v" * 32, "Bob"))
                ],
            )
            await conn.execute(
                sa.insert(_OLD_CONVERSATION),
                {
                    "id": "c" * 32,
                    "channel_id": "ding",
                    "key": "direct:c1",
                    "user_id": "u" * 32,
                    "created_at": now,
                    "last_activity_at": now,
                },
            )
    finally:
        await engine.dispose()

    await alembic_step(empty_url, "upgrade", "head")
    columns, differences = await _inspect(empty_url)
    assert columns >= USER_COLUMNS
    assert differences == [], "models and migrations disagree"
    # nothing cascaded away (a table rebuild on SQLite would have deleted these)
    assert [await _count(empty_url, t) for t in ("platform_identity", "conversation")] == [2, 1]
    store = await Store.open(empty_url, migrate=False, clock=clock)
    try:
        alice, identities = await _user(store, "u" * 32)
        assert (alice.display_name, alice.email, alice.groups, alice.auth_source) == (
            "Alice",
            None,
            (),
            "auto",
        )
        assert (alice.directory_id, alice.blocked, alice.last_seen_at) == (None, False, None)
        assert [i.platform_user_id for i in identities] == ["s1"]
        assert await store.resolve_user("dingtalk", "corp", "s1", "Alice") == "u" * 32
        # the unique indexes hold on the migrated table
        person = await _person(store, clock, directory_id="file:bob", email="bob@example.com")
        await store.link_identity("dingtalk", "corp", "s2", person, display_name="Bob", now=now)
        assert (
            await _person(store, clock, directory_id="file:bob2", email="bob@example.com") == person
        )
        await store.set_blocked("v" * 32, True, now=now)
    finally:
        await store.close()

    await alembic_step(empty_url, "downgrade", "0003")
    columns, _ = await _inspect(empty_url)
    assert not USER_COLUMNS & columns
    assert [
        await _count(empty_url, t) for t in ("user_account", "platform_identity", "conversation")
    ] == [3, 2, 1]

    await alembic_step(empty_url, "upgrade", "head")
    columns, differences = await _inspect(empty_url)
    assert columns >= USER_COLUMNS and differences == []
    store = await Store.open(empty_url, migrate=False, clock=clock)
    try:
        bob, identities = await _user(store, "v" * 32)
        assert (bob.blocked, bob.email) == (False, None)  # what the columns held went with them
        assert identities == []  # s2 was linked to the person, who stays a user
    finally:
        await store.close()
