"""People: users as the directory knows them, the identities linked to them, blocking."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.base import CONFLICT_ATTEMPTS, Clock, StoreBase, completes, require_aware, utc_now
from storage.models import EMAIL_LENGTH, PLATFORM_ID_LENGTH, PlatformIdentity, UserAccount
from storage.records import IdentityRecord, UserRecord

AUTO_SOURCE = "auto"
# last_seen_at is for people reading the admin page: a minute is precise enough, and a busy
# person then costs one write a minute instead of one per message.
TOUCH_EVERY = timedelta(minutes=1)
TOUCHED_USERS = 10_000  # users whose last touch is remembered, least recent forgotten first
_LIKE_ESCAPE = "\\"
_USER = sa.inspect(UserAccount).local_table  # its Core table


def _new_id() -> str:
    return uuid.uuid4().hex


def normal_email(email: str | None) -> str | None:
    """An e-mail as stored: trimmed and lower-cased (what people mean by the same address);
    None when empty, or too long to be an address (RFC 5321)."""
    email = (email or "").strip().lower()
    return email if email and len(email) <= EMAIL_LENGTH else None


def _like(search: str) -> str:
    """A LIKE pattern finding `search` anywhere, its own % and _ taken literally."""
    escaped = search.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2).replace("%", r"\%").replace("_", r"\_")
    return f"%{escaped}%"


def _matches(pattern: str, column: Any) -> sa.ColumnElement[bool]:
    found: sa.ColumnElement[bool] = column.ilike(pattern, escape=_LIKE_ESCAPE)
    return found


class UserRepository(StoreBase):
    """User and identity operations of the Store, for directories and the admin plane."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        super().__init__(engine, clock=clock)
        # user id -> when touch_user last wrote it, so a busy person costs no write a message
        self._touched: OrderedDict[str, datetime] = OrderedDict()

    @completes
    async def user_for_person(
        self,
        *,
        directory_id: str,
        name: str,
        email: str | None,
        groups: Sequence[str],
        auth_source: str,
        now: datetime,
    ) -> str:
        """The user of a directory entry: the one with this directory id, else the one with this
        e-mail (which takes the directory id: a DN changes when a person moves), else a new one.
        Name, e-mail, groups and source follow the directory; returns the user id.

        An e-mail another user holds stays with that user; an empty name keeps the one known, a
        long one is cut to the column. ValueError for a directory id longer than its column.
        """
        now = require_aware(now, "now")
        if len(directory_id) > PLATFORM_ID_LENGTH:
            raise ValueError(f"directory id longer than {PLATFORM_ID_LENGTH} characters")
        email = normal_email(email)
        name = name[:PLATFORM_ID_LENGTH]
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            async with self._write() as session:
                user = await self._user_where(session, UserAccount.directory_id == directory_id)
                if user is None and email is not None:
                    user = await self._user_where(session, UserAccount.email == email)
                if user is None:
                    # nobody holds the e-mail: the lookup above would have found them
                    user = UserAccount(
                        id=_new_id(), display_name=name, created_at=now, updated_at=now
                    )
                    session.add(user)
                elif email is not None and email != user.email:
                    holder = await self._user_where(session, UserAccount.email == email, lock=False)
                    if holder is not None:
                        email = user.email
                wanted = {
                    "directory_id": directory_id,
                    "display_name": name or user.display_name,
                    "email": email,
                    "groups": list(groups),
                    "auth_source": auth_source,
                }
                changed = {k: v for k, v in wanted.items() if getattr(user, k) != v}
                if not changed:
                    return user.id
                for key, value in changed.items():
                    setattr(user, key, value)
                user.updated_at = now
                user_id = user.id
                try:
                    await session.commit()
                except IntegrityError:
                    # Another caller created or claimed the same entry first; the next round
                    # finds theirs.
                    if attempt == CONFLICT_ATTEMPTS:
                        raise
                    continue
                return user_id
        raise AssertionError("unreachable")

    @completes
    async def link_identity(
        self,
        platform: str,
        tenant: str,
        platform_user_id: str,
        user_id: str,
        *,
        display_name: str,
        now: datetime,
    ) -> None:
        """The identity now belongs to `user_id`: created if new, moved if another user had it
        (who keeps its conversations). LookupError if the user does not exist.

        An empty display name keeps the one known.
        """
        now = require_aware(now, "now")
        key = (platform, tenant, platform_user_id)
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            async with self._write() as session:
                if await session.get(UserAccount, user_id) is None:
                    raise LookupError(f"user {user_id} not found")
                identity = await self._identity_where(
                    session,
                    PlatformIdentity.platform == platform,
                    PlatformIdentity.tenant == tenant,
                    PlatformIdentity.platform_user_id == platform_user_id,
                )
                if identity is None:
                    session.add(
                        PlatformIdentity(
                            platform=platform,
                            tenant=tenant,
                            platform_user_id=platform_user_id,
                            user_id=user_id,
                            display_name=display_name,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                elif identity.user_id == user_id and (
                    not display_name or display_name == identity.display_name
                ):
                    return
                else:
                    identity.user_id = user_id
                    identity.display_name = display_name or identity.display_name
                    identity.updated_at = now
                try:
                    await session.commit()
                except IntegrityError:
                    if attempt == CONFLICT_ATTEMPTS:  # created by another caller meanwhile
                        raise
                    continue
                # resolve_user's memory of this account names its previous user
                self._known_users.pop(key, None)
                return
        raise AssertionError("unreachable")

    @completes
    async def unlink_identity(
        self, identity_id: int, *, owner: str | None = None
    ) -> IdentityRecord | None:
        """Gives the identity a fresh auto user of its own (the previous user keeps its
        conversations); the moved identity, None when unknown, or, with `owner`, when it no
        longer belongs to that user (read locked in the same transaction: a link made meanwhile
        is not undone)."""
        conditions = [PlatformIdentity.id == identity_id]
        if owner is not None:
            conditions.append(PlatformIdentity.user_id == owner)
        async with self._write() as session:
            identity = await self._identity_where(session, *conditions)
            if identity is None:
                return None
            now = self._now()
            user = UserAccount(
                id=_new_id(), display_name=identity.display_name, created_at=now, updated_at=now
            )
            session.add(user)
            await session.flush()  # the identity's foreign key needs the user row first
            identity.user_id = user.id
            identity.updated_at = now
            await session.commit()
            self._known_users.pop(
                (identity.platform, identity.tenant, identity.platform_user_id), None
            )
            return IdentityRecord.from_row(identity)

    @completes
    async def label_auto_user(self, user_id: str, *, email: str | None, auth_source: str) -> None:
        """Gives an auto user (no directory entry) its e-mail and source, once: a user that has an
        e-mail, or a source other than "auto", keeps them; an e-mail someone else holds is not
        taken."""
        email = normal_email(email)
        holder = _USER.alias("holder")  # not correlated with the row being updated
        taken = sa.exists().where(holder.c.email == email)
        async with self._write() as session:
            await session.exec(
                update(UserAccount)
                .where(
                    col(UserAccount.id) == user_id,
                    col(UserAccount.directory_id).is_(None),
                    col(UserAccount.email).is_(None),
                    col(UserAccount.auth_source) == AUTO_SOURCE,
                )
                .values(
                    email=None if email is None else sa.case((taken, None), else_=email),
                    auth_source=auth_source,
                )
            )
            await session.commit()

    async def identity_owner(
        self, platform: str, tenant: str, platform_user_id: str
    ) -> UserRecord | None:
        """The user an IM account belongs to, None if it was never seen."""
        statement = (
            select(UserAccount)
            .join(PlatformIdentity, col(PlatformIdentity.user_id) == col(UserAccount.id))
            .where(
                PlatformIdentity.platform == platform,
                PlatformIdentity.tenant == tenant,
                PlatformIdentity.platform_user_id == platform_user_id,
            )
        )
        async with self._read() as session:
            row = (await session.exec(statement)).first()
            return None if row is None else UserRecord.from_row(row)

    async def get_identity(self, identity_id: int) -> IdentityRecord | None:
        """The identity with this id."""
        async with self._read() as session:
            row = await session.get(PlatformIdentity, identity_id)
            return None if row is None else IdentityRecord.from_row(row)

    async def get_user(self, user_id: str) -> tuple[UserRecord, list[IdentityRecord]] | None:
        """A user and its identities (oldest first)."""
        async with self._read() as session:
            user = await session.get(UserAccount, user_id)
            if user is None:
                return None
            statement = (
                select(PlatformIdentity)
                .where(PlatformIdentity.user_id == user_id)
                .order_by(col(PlatformIdentity.id))
            )
            identities = [IdentityRecord.from_row(row) for row in await session.exec(statement)]
            return UserRecord.from_row(user), identities

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, UserRecord]:
        """The users with these ids, by id, in one read (the unknown ones left out)."""
        wanted = sorted(set(user_ids))
        if not wanted:
            return {}
        statement = select(UserAccount).where(col(UserAccount.id).in_(wanted))
        async with self._read() as session:
            return {row.id: UserRecord.from_row(row) for row in await session.exec(statement)}

    async def list_users(self, *, search: str | None, limit: int) -> list[UserRecord]:
        """Users most recently seen (else created) first; `search` finds a piece of the name,
        the e-mail, or an identity's platform user id or display name, ignoring case (ASCII
        case only on SQLite)."""
        if limit <= 0:
            return []
        statement = select(UserAccount)
        if search:
            pattern = _like(search)

            identity = sa.exists().where(
                col(PlatformIdentity.user_id) == col(UserAccount.id),
                sa.or_(
                    _matches(pattern, col(PlatformIdentity.platform_user_id)),
                    _matches(pattern, col(PlatformIdentity.display_name)),
                ),
            )
            statement = statement.where(
                sa.or_(
                    _matches(pattern, col(UserAccount.display_name)),
                    _matches(pattern, col(UserAccount.email)),
                    identity,
                )
            )
        seen = sa.func.coalesce(col(UserAccount.last_seen_at), col(UserAccount.created_at))
        statement = statement.order_by(seen.desc(), col(UserAccount.id)).limit(limit)
        async with self._read() as session:
            return [UserRecord.from_row(row) for row in await session.exec(statement)]

    @completes
    async def set_blocked(self, user_id: str, blocked: bool, *, now: datetime) -> UserRecord | None:
        """Blocks or unblocks a user (unblocking forgets the last notice, so a new block is told
        at once); the user after, None when unknown."""
        now = require_aware(now, "now")
        async with self._write() as session:
            user = await self._user_where(session, UserAccount.id == user_id)
            if user is None:
                return None
            if user.blocked != blocked:
                user.blocked = blocked
                user.blocked_notice_at = None
                user.updated_at = now
                await session.commit()
            return UserRecord.from_row(user)

    @completes
    async def block_notice_due(self, user_id: str, *, now: datetime, every: timedelta) -> bool:
        """True at most once per `every` for a blocked user (then it is time to tell them so);
        one conditional UPDATE, so replicas answering at once agree. False when not blocked."""
        now = require_aware(now, "now")
        async with self._write() as session:
            result = await session.exec(
                update(UserAccount)
                .where(
                    col(UserAccount.id) == user_id,
                    col(UserAccount.blocked).is_(True),
                    sa.or_(
                        col(UserAccount.blocked_notice_at).is_(None),
                        col(UserAccount.blocked_notice_at) <= now - every,
                    ),
                )
                .values(blocked_notice_at=now)
            )
            await session.commit()
            return result.rowcount == 1

    async def touch_user(self, user_id: str, *, now: datetime) -> None:
        """Records that the user was seen at `now`; skipped within TOUCH_EVERY of the last time."""
        now = require_aware(now, "now")
        touched = self._touched
        last = touched.get(user_id)
        if last is not None and now - last < TOUCH_EVERY:
            return
        await self._touch(user_id, now)
        touched[user_id] = now
        touched.move_to_end(user_id)
        if len(touched) > TOUCHED_USERS:
            touched.popitem(last=False)

    @completes
    async def _touch(self, user_id: str, now: datetime) -> None:
        async with self._write() as session:
            await session.exec(
                update(UserAccount)
                .where(
                    col(UserAccount.id) == user_id,
                    # another replica may have touched it already
                    sa.or_(
                        col(UserAccount.last_seen_at).is_(None),
                        col(UserAccount.last_seen_at) <= now - TOUCH_EVERY,
                    ),
                )
                .values(last_seen_at=now)
            )
            await session.commit()

    @staticmethod
    async def _user_where(
        session: AsyncSession, condition: sa.ColumnElement[bool] | bool, *, lock: bool = True
    ) -> UserAccount | None:
        statement = select(UserAccount).where(condition)
        if lock:
            statement = statement.with_for_update()
        return (await session.exec(statement)).first()

    @staticmethod
    async def _identity_where(
        session: AsyncSession, *conditions: sa.ColumnElement[bool] | bool
    ) -> PlatformIdentity | None:
        statement = select(PlatformIdentity).where(*conditions).with_for_update()
        return (await session.exec(statement)).first()
