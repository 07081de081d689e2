"""Hostile strings for the fuzzers, and the storage path every fuzzed inbound message takes.

Hypothesis's default text strategy never produces lone surrogates (category Cs) and rarely NUL;
`hostile_text` mixes them in with C0 controls, format characters (RTL marks, zero-width joiners,
BOM), ordinary letters and strings longer than any id column.

`store_inbound` is what the daemon does with a message before and while answering it: the
journal row (before the ack), the user and identity, the conversation and the user's turn.
`journal_converted` runs it on a real SQLite store for every message a platform's converter
makes of hostile payloads.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channels.conversations import conversation_key
from channels.model import ChannelId, InboundMessage, inbound_from_json, inbound_to_json
from storage import Store
from tests.storage_support import sqlite_url

__all__ = ["SPECIAL", "hostile_text", "journal_converted", "store_inbound"]

SPECIAL = [
    "\udcff",  # a lone low surrogate: no UTF-8 form
    "\ud83d",  # a lone high surrogate
    "\ud83d\ude00",  # a surrogate pair left unjoined in the str
    "\x00",
    "a\x00b",
    "\x1b[2J\x07",  # terminal escape and bell
    "\u202eevil\u202c",  # right-to-left override
    "\u200f\u200e\u200d\ufeff",  # RTL and LTR marks, zero-width joiner, BOM
]
hostile_chars = st.characters(categories=["Cs", "Cc", "Cf", "L", "N", "P", "Zs", "So"])
hostile_text = st.one_of(
    st.text(hostile_chars, max_size=30),
    st.sampled_from(SPECIAL),
    st.lists(st.sampled_from(SPECIAL) | st.text(max_size=5), max_size=6).map("".join),
    st.integers(min_value=240, max_value=600).map(lambda n: "\u05d0x" * (n // 2)),  # long, RTL
)


async def store_inbound(store: Store, message: InboundMessage) -> InboundMessage:
    """Journals the message and stores its user, conversation and turn; returns the journaled
    message as read back (a poison value raises here, as it would in the daemon)."""
    entry_id = await store.journal_accept(
        message.channel_id, message.message_id, message.frame_id or None, inbound_to_json(message)
    )
    assert entry_id is not None, "each fuzzed message must reach the journal"
    user_id = await store.resolve_user(
        message.platform, message.tenant, message.sender.platform_id, message.sender.display_name
    )
    conversation = await store.start_new_conversation(
        message.channel_id,
        conversation_key(message, "per_user"),
        user_id,
        now=message.received_at,
    )
    await store.append_message(
        conversation.id, "user", message.text, journal_id=entry_id, now=message.received_at
    )
    entry = await store.journal_get(entry_id)
    assert entry is not None
    return inbound_from_json(entry.payload)


async def journal_converted(
    tmp_path: Path,
    payloads: st.SearchStrategy[Any],
    convert: Callable[[Any], Iterable[InboundMessage]],
    *,
    examples: Iterable[Any] = (),
) -> int:
    """convert -> normalise -> journal, user, conversation and turn on a real SQLite store, for
    every message `convert` makes of each payload; returns how many were stored."""
    store = await Store.open(sqlite_url(tmp_path / "fuzz.db"))
    loop = asyncio.get_running_loop()
    channels = (ChannelId(f"fuzz-{n}") for n in itertools.count())
    stored = 0

    async def journal(message: InboundMessage) -> None:
        nonlocal stored
        # a channel of its own per example: a repeated id would otherwise be a redelivery
        message = replace(message, channel_id=next(channels))
        assert await store_inbound(store, message) == message
        stored += 1

    def journal_each(payload: Any) -> None:
        for message in convert(payload):
            asyncio.run_coroutine_threadsafe(journal(message), loop).result(30)

    # derandomized and modest: every example costs four SQLite writes
    run = settings(
        max_examples=120,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )(given(payloads)(journal_each))
    for payload in examples:
        run = example(payload)(run)
    try:
        # hypothesis runs in a worker thread; the store lives on this loop
        await asyncio.to_thread(run)
    finally:
        await store.close()
    return stored
