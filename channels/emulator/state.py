"""What every emulator's state shares: a change feed, injected faults, recorded calls, tokens.

Everything here is touched only from the emulator's own event loop; callers on other threads go
through `EmulatorThread`, which hands them copies.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import fnmatch
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")
A = TypeVar("A")  # a platform's app record
C = TypeVar("C", bound="RecordedCall")
K = TypeVar("K")  # a platform's card state


@dataclasses.dataclass(kw_only=True)
class Fault:
    """An injected HTTP fault: answers matching calls until its uses run out, or delays them."""

    path: str  # exact path or fnmatch pattern, e.g. "/v1.0/card/*"
    status: int | None = None
    remaining: int | None = 1  # None: forever
    method: str | None = None
    delay: float = 0.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Method (if given) and path pattern both match."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return path == self.path or fnmatch.fnmatchcase(path, self.path)

    @property
    def answers(self) -> bool:
        """It replaces the real answer (rather than only delaying it)."""
        return self.status is not None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedCall:
    """One HTTP call an emulator answered; secrets and tokens are never kept."""

    seq: int  # in order of completion (a WebSocket call completes when it closes)
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    fault: bool  # answered by an injected fault instead of the real route

    def extended(self, record_type: type[C], **extra: Any) -> C:
        """This call as a platform's own record, which adds its fields to these."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return record_type(**fields, **extra)


@dataclasses.dataclass(frozen=True, slots=True)
class Delivered:
    """What `send_user_message` did: whether the bot's connection got the message, and why not.

    A platform's subclass adds the ids to correlate acks, replies and the chat view.
    """

    delivered: bool
    reason: str  # why not delivered, "" when delivered

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form for the control plane."""
        return json_fields(self)


@dataclasses.dataclass
class Transcript:
    """A chat as its members see it: its items in order, and a version bumped on each change."""

    items: list[Any] = dataclasses.field(default_factory=list, kw_only=True)
    version: int = dataclasses.field(default=0, kw_only=True)

    def key(self) -> str:
        """The platform's id of the chat."""
        raise NotImplementedError

    def header(self) -> dict[str, Any]:
        """The chat's own fields (all but the transcript), for the chat view."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("items", "version")
        }


It = TypeVar("It")


class CardStatus:
    """What every emulated card says about itself: its status, and whether it is settled."""

    __slots__ = ()

    @property
    def status(self) -> str:
        """`created`, `streaming`, `finished` or `failed`."""
        raise NotImplementedError

    @property
    def done(self) -> bool:
        """No more changes are expected."""
        return self.status in ("finished", "failed")


F = TypeVar("F", bound=Fault)


class EmulatorStateBase(Generic[F, C, K]):
    """A version bumped on every change, waiters woken by it, faults, calls, tokens and cards."""

    apps: Mapping[str, Any]  # app id -> the platform's app record
    chats: Mapping[str, Transcript]  # chat id -> the chat

    def __init__(self) -> None:
        self.faults: list[F] = []
        self.calls: list[C] = []
        self.cards: dict[str, K] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (app id, monotonic deadline)
        self.latency = 0.0  # added to every platform call (not the control plane)
        self.version = 0
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """Bump the version and wake everyone waiting for a change."""
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self, at_most: float) -> None:
        """Returns after the next change or after `at_most` seconds, whichever comes first."""
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), at_most)
        except TimeoutError:
            return

    def take_fault(self, method: str, path: str) -> F | None:
        """The first matching fault, consuming one of its uses."""
        for fault in self.faults:
            if fault.matches(method, path):
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def record(self, call: C) -> None:
        """Keeps one answered call and wakes waiters."""
        self.calls.append(call)
        self.changed()

    def app_for_token(self, token: str) -> str | None:
        """The app a valid, unexpired access token belongs to."""
        entry = self.tokens.get(token)
        if entry is None or time.monotonic() >= entry[1]:
            return None
        return entry[0]

    def expire_tokens(self) -> int:
        """Invalidates every access token issued so far."""
        count = len(self.tokens)
        self.tokens.clear()
        self.changed()
        return count

    def refresh(self, card: K) -> None:
        """Brings a card up to date before it is shown (for changes that come with time)."""

    def card_copy(self, card_id: str) -> K | None:
        """A copy that later changes will not touch."""
        card = self.cards.get(card_id)
        if card is None:
            return None
        self.refresh(card)
        return copy.deepcopy(card)

    def notify(self, chat_id: str | None = None) -> None:
        """Something changed (in a chat, when given): bump versions and wake waiters."""
        chat = self.chats.get(chat_id) if chat_id is not None else None
        if chat is not None:
            chat.version += 1
        self.changed()

    def add_item(self, chat: Transcript, item: It) -> It:
        """Appends to a transcript and wakes waiters."""
        chat.items.append(item)
        self.notify(chat.key())
        return item

    def chat_view(self, chat_id: str) -> dict[str, Any] | None:
        """The transcript with every card rendered as it looks right now."""
        chat = self.chats.get(chat_id)
        if chat is None:
            return None
        items = [self.item_view(item) for item in chat.items]
        return {**chat.header(), "version": chat.version, "items": items}

    def item_view(self, item: Any) -> dict[str, Any]:
        """One transcript item as the chat view shows it (a card as it looks now)."""
        raise NotImplementedError


def app_records(specs: Iterable[Any], app_type: type[A]) -> list[A]:
    """A platform's app records, from records or from `(id, secret[, extra])` tuples."""
    return [s if isinstance(s, app_type) else app_type(*s) for s in specs]


def json_fields(record: Any) -> dict[str, Any]:
    """A dataclass record as JSON-ready fields, for control-plane answers."""
    fields: dict[str, Any] = dataclasses.asdict(record)
    return fields


async def wait_until(
    check: Callable[[], T],
    wait_changed: Callable[[float], Awaitable[None]],
    timeout: float,  # noqa: ASYNC109 - a deadline for a condition, not for one await
) -> T:
    """`check()`'s first truthy value, re-checked on every change (and every 50 ms, for
    conditions that depend on the clock); TimeoutError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if value:
            return value
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"emulator condition not met within {timeout}s")
        await wait_changed(min(remaining, 0.05))
