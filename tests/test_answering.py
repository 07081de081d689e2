"""The per-reply path against a real SQLite store that fails where a real one can."""

from __future__ import annotations

from sqlalchemy import text

from channels.conversations import AnswerSlots
from channels.emitter import EmitterSettings
from channels.handler import MessageHandler
from storage.repository import Store
from tests.test_live_channel import (
    GatedAgent,
    RecordingProvider,
    inbound,
    journal,
    never_used,
    runtime_for,
    store,
    wait_until,
)

__all__ = ["store"]


async def test_a_reply_that_cannot_be_recorded_ends_its_card_and_fails(store: Store) -> None:
    # the user's turn cannot be stored (as when the disk is full): "replying" is never recorded
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TRIGGER refuse_turns BEFORE INSERT ON message "
                "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
            )
        )
    provider, agent = RecordingProvider(never_used), GatedAgent()
    agent.gate.set()
    handler = MessageHandler(store, slots=AnswerSlots(1))
    try:
        await handler.accept(inbound("m1", "hello"), runtime_for(provider, agent))
        await wait_until(lambda: not handler.busy())
    finally:
        await handler.close()
    [stream] = provider.streams
    assert stream.failed == EmitterSettings().failure_text  # the card does not stay "thinking"
    assert stream.final is None
    [(state, error)] = await journal(store)
    assert state == "failed"
    assert error is not None and "disk says no" in error
