"""Inbound HTTP callbacks: what a webhook platform's provider is handed, and what it answers.

The callback listener (`daemon/webhooks.py`) owns the HTTP exchange and what every platform
shares: who may call, the body's size, that it is JSON, which channel it is for. The provider owns
the rest: the platform's signature and time window, turning the body into `InboundMessage`s, and
the answer the platform expects. It hands a callback's messages to `deliver` (one journal
transaction for the whole batch) and answers only once that returned, the same journal-before-ack
rule as the stream platforms; when `deliver` raises, the callback is not acknowledged and the
platform sends it again.

A webhook platform has no session to hold open: `CallbackSession` lets `SessionProvider` run one
whose `open()` checks the credentials with one authenticated API call, and which then stays "open"
until the channel stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from channels.connection import SessionSocket
from channels.model import InboundMessage


def signed_bytes(text: str) -> bytes:
    """`text` as the bytes a signature covers. Lone surrogates (JSON escapes a forger may send)
    pass through, so such a callback fails its check instead of failing the request."""
    return text.encode("utf-8", "surrogatepass")


def proof_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of what a callback carries (signature, key) with ours."""
    return hmac.compare_digest(signed_bytes(given), signed_bytes(expected))


class SeenProofs:
    """The signed callbacks of the last `keep` seconds, and the body each proof came with.

    ZIM and Easemob sign a timestamp and a nonce or call id, not the message: within the time
    window a captured proof would carry any other body. Here the same proof with another body is
    refused, while the platform's own retry (the same proof, the same body) keeps passing even
    once the window has moved past its timestamp. Memory is bounded: the oldest proofs go first.
    """

    def __init__(
        self, keep: float, limit: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._keep = keep
        self._limit = limit
        self._clock = clock
        self._seen: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def retried(self, proof: str, body: bytes) -> bool:
        """True when `proof` came before with this body; CallbackRejected when it came with
        another; False when it is new (check its time, then `remember` it)."""
        self._forget_old()
        seen = self._seen.get(proof)
        if seen is None:
            return False
        if not hmac.compare_digest(seen[1], hashlib.sha256(body).digest()):
            raise CallbackRejected("replayed", "a signature seen before, on another body")
        return True

    def remember(self, proof: str, body: bytes) -> None:
        """`proof` was checked and came with `body`."""
        self._seen[proof] = (self._clock(), hashlib.sha256(body).digest())
        self._seen.move_to_end(proof)
        while len(self._seen) > self._limit:
            self._seen.popitem(last=False)

    def _forget_old(self) -> None:
        horizon = self._clock() - self._keep
        while self._seen and next(iter(self._seen.values()))[0] < horizon:
            self._seen.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Intake:
    """What became of a callback's messages: journaled, recognised redeliveries, not for the bot."""

    journaled: int = 0
    duplicates: int = 0
    ignored: int = 0


# Journals a callback's messages in one transaction; raises when they were not journaled.
BatchSink = Callable[[Sequence[InboundMessage]], Awaitable[Intake]]


@dataclass(frozen=True, slots=True)
class Callback:
    """One POST to `/hooks/{channel_id}`, already size-checked and parsed as JSON."""

    query: str  # the raw query string: platforms append their own parameters in their own ways
    headers: Mapping[str, str]  # lower-case names
    body: bytes  # exactly as received (signatures may cover it)
    payload: Any  # the body parsed as JSON


@dataclass(frozen=True, slots=True)
class CallbackAnswer:
    """The HTTP answer the platform expects, and what the callback held."""

    status: int = 200
    body: Mapping[str, Any] | None = None  # sent as JSON; None: an empty body
    intake: Intake = Intake()
    # messages and events acknowledged as not for the bot (its echo, system messages, other
    # event types): counted in channeld_messages_ignored; unreadable ones are the provider's
    ignored_events: int = 0


class CallbackRejected(Exception):
    """The platform's check failed (signature, time window, key): 401, nothing journaled."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # a metric label: "signature", "timestamp", "key"


class CallbackMalformed(Exception):
    """JSON, but not the shape the platform sends: 400, nothing journaled."""


@runtime_checkable
class CallbackProvider(Protocol):
    """A provider that receives its platform's messages as HTTP callbacks."""

    async def handle_callback(self, callback: Callback, deliver: BatchSink) -> CallbackAnswer:
        """Check `callback`, deliver its messages, then answer; raises CallbackRejected,
        CallbackMalformed, or whatever `deliver` raised."""
        ...


class CallbackSession:
    """A webhook platform's "session": open once its credentials were checked, until closed."""

    def __init__(self, check: Callable[[], Awaitable[None]], logger: logging.Logger) -> None:
        self._check = check
        self._closed = asyncio.Event()
        self.socket = SessionSocket("callbacks", logger)  # only its time of the last callback

    def touch(self) -> None:
        """A callback arrived."""
        self.socket.last_frame_at = time.monotonic()

    async def open(self) -> None:
        """One authenticated API call, which raises a classified error when it fails."""
        await self._check()

    async def run(self) -> None:
        """Nothing to read: callbacks come to the listener. Returns when closed."""
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()
