"""Who wrote: the internal user behind a platform identity, asked of the directory if any.

Without a directory (mapper "auto") every platform identity is a user of its own, as the store's
`resolve_user` always made it. With one, the directory's answer for an identity is remembered
for `cache_seconds`: a returning person costs no directory call and, once linked, no store write.
A directory that cannot answer never stops a known person (the last answer is served, the outage
logged once and counted); someone new then follows `on_miss`, as someone the directory does not
know does. With `enrich`, the platform is first asked who a new sender is (their e-mail, mobile
and employee number, remembered as long as the answer), so a directory can match on them and an
automatic user is known by the platform's e-mail; an app without the permission is named once in
the log, and a failed ask is only a missing detail, never a missing answer. Blocked users are read
as a set, refreshed in the background (a block applies within BLOCKED_REFRESH seconds on every
replica, at once where `refresh_blocked()` is called), so that checking costs the message path
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from channels.model import InboundMessage
from channels.users.directory import Directory, DirectoryError, Person, Who
from channels.users.profiles import ProfileSource, SenderProfiles

log = logging.getLogger(__name__)

AUTO = "auto"  # the mapper label without a directory
KNOWN_PEOPLE = 10_000  # identities remembered, least recently seen forgotten first
# After a failed lookup, how long a known person is served their last answer before the
# directory is asked again: one message waits for the timeout, not every message of an outage.
RETRY_AFTER_ERROR = timedelta(seconds=60)
# Seconds between the background rounds: blocked users read again (other replicas' blocks), the
# users seen since written (last_seen_at), new auto users given their e-mail and source. Off the
# answer path: a message costs no write for them.
BLOCKED_REFRESH = 30.0
KNOWN_IDENTITIES = 10_000  # auto identities already labelled, least recently seen forgotten first
BLOCK_NOTICE_EVERY = timedelta(days=1)
REFUSED_TEXT = "You are not allowed to use this assistant."
BLOCKED_TEXT = "You have been blocked from this assistant."


class OnMiss(StrEnum):
    """What becomes of someone the directory does not know (or could not be asked about)."""

    CREATE = "create"  # a user of their own, as in mode "auto"
    REFUSE = "refuse"  # told they are not allowed; nothing reaches an agent


class Outcome(StrEnum):
    """The `outcome` label of channeld_user_resolutions_total."""

    HIT = "hit"  # the directory knew the person
    MISS = "miss"  # the directory does not know them (followed by created or refused)
    CREATED = "created"  # on_miss gave them a user of their own
    REFUSED = "refused"  # on_miss refused them
    ERROR = "error"  # the directory could not answer (followed by cached, created or refused)
    CACHED = "cached"  # answered from memory, no directory call


class UserObserver(Protocol):
    """Where resolutions are reported; channels.observer.Observer is one."""

    def user_resolution(self, mapper: str, outcome: str) -> None: ...
    def directory_latency(self, mapper: str, seconds: float) -> None: ...


class UserStore(Protocol):
    """The store's user operations the resolver needs (storage/users.py)."""

    async def resolve_user(
        self, platform: str, tenant: str, platform_user_id: str, display_name: str
    ) -> str: ...

    async def user_for_person(
        self,
        *,
        directory_id: str,
        name: str,
        email: str | None,
        groups: list[str],
        auth_source: str,
        now: datetime,
    ) -> str: ...

    async def link_identity(
        self,
        platform: str,
        tenant: str,
        platform_user_id: str,
        user_id: str,
        *,
        display_name: str,
        now: datetime,
    ) -> None: ...

    async def block_notice_due(self, user_id: str, *, now: datetime, every: timedelta) -> bool: ...

    async def touch_user(self, user_id: str, *, now: datetime) -> None: ...

    async def label_auto_user(
        self, user_id: str, *, email: str | None, auth_source: str
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Resolution:
    """Who a message's sender is, and whether they may be answered."""

    user_id: str  # empty when refused: no user was made
    refused: bool = False
    blocked: bool = False
    groups: tuple[str, ...] = ()


@dataclass(slots=True)
class _Known:
    """What the resolver remembers of one identity."""

    resolution: Resolution
    fresh_until: datetime  # asked again from then on


def auto_email(platform: str, user_id: str, domain: str) -> str:
    """The address an automatically made user is known by: `{platform}-{user_id}@{domain}`."""
    return f"{platform}-{user_id}@{domain}"


def who_wrote(message: InboundMessage) -> Who:
    """What the message tells about its sender, as the directory is asked."""
    extra = message.sender.extra_ids
    return Who(
        platform=message.platform,
        tenant=message.tenant,
        user_id=message.sender.platform_id,
        name=message.sender.display_name,
        email=extra.get("email", ""),
        mobile=extra.get("mobile", ""),
        employee_no=extra.get("employee_no", ""),
    )


class UserResolver:
    """Resolves senders to users; `start()` before the first message, `stop()` at the end."""

    def __init__(
        self,
        store: UserStore,
        directory: Directory | None,
        *,
        on_miss: OnMiss = OnMiss.CREATE,
        cache_seconds: float = 3600.0,
        email_domain: str = "im-platform.invalid",
        clock: Callable[[], datetime],
        observer: UserObserver,
        blocked_users: Callable[[], Awaitable[Collection[str]]] | None = None,
        blocked_refresh: float = BLOCKED_REFRESH,
        refused_text: str = REFUSED_TEXT,
        blocked_text: str = BLOCKED_TEXT,
        enrich: bool = False,
    ) -> None:
        self.refused_text = refused_text  # what a refused sender is told, every time
        self.blocked_text = blocked_text  # what a blocked one is told, once a day
        self._store = store
        self._directory = directory
        self._on_miss = on_miss
        self._cache_for = timedelta(seconds=cache_seconds)
        self._clock = clock
        self._observer = observer
        self._mapper = directory.source if directory is not None else AUTO
        self._known: OrderedDict[tuple[str, str, str], _Known] = OrderedDict()
        self._blocked: frozenset[str] = frozenset()
        self._blocked_users = blocked_users  # None: nobody is ever blocked (unit tests)
        self._blocked_refresh = blocked_refresh
        self._refresher: asyncio.Task[None] | None = None
        self._failing = False  # the directory's last answer was an error (logged once)
        self._email_domain = email_domain
        self._seen: dict[str, datetime] = {}  # user id -> last seen, written in the background
        self._to_label: dict[str, tuple[str, str]] = {}  # auto user id -> (e-mail, platform)
        self._labelled: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._enrich = enrich  # ask the platform who a new sender is
        self._profiles = SenderProfiles(
            clock=clock, keep=self._cache_for, retry_after_error=RETRY_AFTER_ERROR
        )

    @property
    def mapper(self) -> str:
        """ "auto", or the directory's source: "file", "http", "ldap"."""
        return self._mapper

    @property
    def asks_directory(self) -> bool:
        """Whether a directory is asked (else nobody is refused)."""
        return self._directory is not None

    def is_blocked(self, user_id: str) -> bool:
        """Whether the user is blocked, as of the last read of the blocked users."""
        return user_id in self._blocked

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Reads the blocked users, then keeps them fresh (and writes who was seen) in the
        background."""
        await self.refresh_blocked()
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_loop(), name="user-upkeep")

    async def stop(self) -> None:
        """Ends the background rounds (writing what is left) and closes the directory."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
            await self.write_seen()
        if self._directory is not None:
            await self._directory.aclose()

    async def refresh_blocked(self) -> None:
        """Read the blocked users now (a block set elsewhere applies from here on)."""
        if self._blocked_users is not None:
            self._blocked = frozenset(await self._blocked_users())

    def forget(self) -> None:
        """Forget every remembered answer: the directory changed (a reloaded users file)."""
        self._known.clear()

    async def write_seen(self) -> None:
        """Write who was seen (last_seen_at) and the auto users made since the last round;
        best effort: a busy database loses a last_seen_at, never an answer."""
        seen, self._seen = self._seen, {}
        labels, self._to_label = self._to_label, {}
        try:
            for user_id, (email, platform) in labels.items():
                await self._store.label_auto_user(user_id, email=email, auth_source=platform)
            for user_id, at in seen.items():
                await self._store.touch_user(user_id, now=at)
        except Exception as exc:  # noqa: BLE001 - any storage failure; the next round goes on
            log.warning("users seen not recorded: %s", exc)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._blocked_refresh)
            await self.write_seen()
            try:
                await self.refresh_blocked()
            except Exception as exc:  # noqa: BLE001 - any storage failure; the last set stays
                log.warning("blocked users not refreshed: %s", exc)

    # -- resolving ---------------------------------------------------------------------------

    async def resolve(
        self, message: InboundMessage, profile: ProfileSource | None = None
    ) -> Resolution:
        """The sender's user; refused or blocked when nothing may reach an agent for them.

        With `enrich`, `profile` is asked first about a sender not resolved yet (or no longer
        fresh), its details added to what the message carries."""
        who = who_wrote(message)
        complete = True
        if self._enrich and profile is not None and self._wants_profile(who):
            who, complete = await self._profiles.enrich(message.channel_id, who, profile)
        return await self._resolve(who, complete=complete)

    async def resolve_who(self, who: Who) -> Resolution:
        """The user behind `who`, as `resolve` finds it (voice calls know only the identity)."""
        return await self._resolve(who, complete=True)

    async def _resolve(self, who: Who, *, complete: bool) -> Resolution:
        """`complete` False: the platform could not say who this is; what the directory answers
        without it is asked again after RETRY_AFTER_ERROR (an auto user is labelled later)."""
        if self._directory is None:
            return self._with_block(Resolution(await self._auto_user(who, label=complete)))
        key = (who.platform, who.tenant, who.user_id)
        now = self._clock()
        known = self._known.get(key)
        if known is not None and now < known.fresh_until:
            self._known.move_to_end(key)
            self._count(Outcome.CACHED)
            return self._with_block(known.resolution)
        try:
            person = await self._lookup(self._directory, who)
        except DirectoryError as exc:
            self._count(Outcome.ERROR)
            if not self._failing:
                self._failing = True
                log.warning("the %s directory cannot answer (%s)", self._mapper, exc)
            if known is not None:
                # a known person is served the last answer; asked again in a while
                known.fresh_until = now + RETRY_AFTER_ERROR
                self._count(Outcome.CACHED)
                return self._with_block(known.resolution)
            # someone new: on_miss decides, and the directory is asked at their next message
            return self._with_block(await self._missing(who, label=complete))
        if self._failing:
            self._failing = False
            log.info("the %s directory answers again", self._mapper)
        if person is None:
            self._count(Outcome.MISS)
            resolution = await self._missing(who, label=complete)
        else:
            self._count(Outcome.HIT)
            resolution = await self._linked(who, person, now)
        keep = self._cache_for if complete else min(RETRY_AFTER_ERROR, self._cache_for)
        self._remember(key, resolution, now + keep)
        return self._with_block(resolution)

    async def block_notice_due(self, user_id: str) -> bool:
        """Whether a blocked user is told so now: at most once a day, across replicas."""
        return await self._store.block_notice_due(
            user_id, now=self._clock(), every=BLOCK_NOTICE_EVERY
        )

    async def _lookup(self, directory: Directory, who: Who) -> Person | None:
        began = time.monotonic()
        try:
            return await directory.lookup(who)
        finally:
            self._observer.directory_latency(self._mapper, time.monotonic() - began)

    async def _linked(self, who: Who, person: Person, now: datetime) -> Resolution:
        """The directory's person as a user, with this identity linked to them."""
        user_id = await self._store.user_for_person(
            directory_id=person.directory_id,
            name=person.name,
            email=person.email or None,
            groups=list(person.groups),
            auth_source=self._mapper,
            now=now,
        )
        await self._store.link_identity(
            who.platform, who.tenant, who.user_id, user_id, display_name=who.name, now=now
        )
        return Resolution(user_id, groups=person.groups)

    async def _missing(self, who: Who, *, label: bool) -> Resolution:
        """Someone the directory does not know (or could not say): on_miss decides."""
        if self._on_miss is OnMiss.REFUSE:
            self._count(Outcome.REFUSED)
            return Resolution("", refused=True)
        self._count(Outcome.CREATED)
        return Resolution(await self._auto_user(who, label=label))

    async def _auto_user(self, who: Who, *, label: bool = True) -> str:
        """The identity's own user, as the store always made it; once per identity and process,
        it is given its e-mail and the platform as its source (in the background). `label`
        False: the platform could not say who this is, so the label waits for a later message."""
        user_id = await self._store.resolve_user(who.platform, who.tenant, who.user_id, who.name)
        key = (who.platform, who.tenant, who.user_id)
        if key in self._labelled:
            self._labelled.move_to_end(key)
        elif label:
            # a user a directory made or linked keeps its e-mail and source: the store labels
            # only users with no e-mail and source "auto"; with enrich, the platform's e-mail
            email = (self._enrich and who.email) or auto_email(
                who.platform, who.user_id, self._email_domain
            )
            self._to_label[user_id] = (email, who.platform)
            self._labelled[key] = None
            if len(self._labelled) > KNOWN_IDENTITIES:
                self._labelled.popitem(last=False)
        return user_id

    def _remember(
        self, key: tuple[str, str, str], resolution: Resolution, fresh_until: datetime
    ) -> None:
        self._known[key] = _Known(resolution, fresh_until)
        self._known.move_to_end(key)
        if len(self._known) > KNOWN_PEOPLE:
            self._known.popitem(last=False)

    def _wants_profile(self, who: Who) -> bool:
        """Whether this sender is about to be resolved afresh (else the profile is not needed)."""
        key = (who.platform, who.tenant, who.user_id)
        if self._directory is None:
            return key not in self._labelled  # only an auto user's label uses it
        known = self._known.get(key)
        return known is None or self._clock() >= known.fresh_until

    def _with_block(self, resolution: Resolution) -> Resolution:
        if resolution.user_id:
            self._seen[resolution.user_id] = self._clock()
        if resolution.user_id and resolution.user_id in self._blocked:
            return Resolution(resolution.user_id, blocked=True, groups=resolution.groups)
        return resolution

    def _count(self, outcome: Outcome) -> None:
        self._observer.user_resolution(self._mapper, outcome.value)
