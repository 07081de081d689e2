"""What the webhook platforms' callback tests hand a provider: a journal that records, and the
check that a cancelled request still finishes its journal write."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import pytest

from channels.callbacks import Callback, CallbackProvider, Intake
from channels.model import InboundMessage
from channels.provider import ChannelProvider

__all__ = ["Journal", "journaled_despite_cancel", "no_sink"]


class Journal:
    """A BatchSink that records what it was handed, dedupes on message id, and can fail."""

    def __init__(self) -> None:
        self.batches: list[list[InboundMessage]] = []
        self.seen: set[str] = set()
        self.failure: Exception | None = None

    async def __call__(self, messages: Sequence[InboundMessage]) -> Intake:
        if self.failure is not None:
            raise self.failure
        self.batches.append(list(messages))
        fresh = [m for m in messages if m.message_id not in self.seen]
        self.seen.update(m.message_id for m in messages)
        return Intake(journaled=len(fresh), duplicates=len(messages) - len(fresh))


async def no_sink(_message: InboundMessage) -> None:
    raise AssertionError("callbacks go through the batch sink")


class _Provider(CallbackProvider, ChannelProvider, Protocol):
    """A webhook platform's provider: both contracts at once."""


async def journaled_despite_cancel(provider: _Provider, callback: Callback) -> list[str]:
    """Cancels `callback`'s request while its journal write is under way; the ids the write
    journaled all the same, once the provider has closed."""
    entered, release = asyncio.Event(), asyncio.Event()
    written: list[str] = []

    async def slow_journal(messages: Sequence[InboundMessage]) -> Intake:
        entered.set()
        await release.wait()
        written.extend(m.message_id for m in messages)
        return Intake(journaled=len(messages))

    request = asyncio.create_task(provider.handle_callback(callback, slow_journal))
    await entered.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    release.set()
    await provider.close()  # waits for deliveries under way
    return written
