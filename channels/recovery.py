"""Recovery on start: journal rows a crash left in `received` or `replying` are resumed.

A card whose complete answer was recorded before its final text was sent is ended with that
answer (the crash came after the user may have seen it: answering again would say it twice);
any other card left streaming is closed with a visible note; a message younger than the
freshness window is answered again; an older one gets a clear "please resend" instead of a
stale answer.

The rows to recover are read before any channel starts (the daemon hands them over): a message
received after that belongs to a live worker, and recovery taking it too would answer it twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from channels.conversations import Job
from channels.handler import MessageHandler
from channels.live import ChannelRuntime
from channels.model import inbound_from_json
from common.errors import ChannelError
from storage.repository import JournalEntry, JournalState, Store

log = logging.getLogger(__name__)

INTERRUPTED_NOTE = "(This answer was interrupted by a restart.)"
LOST_TEXT = (
    "Sorry, your message \u201c{excerpt}\u201d arrived while I was restarting and its answer "
    "was lost. Please send it again."
)


@dataclass
class RecoveryReport:
    resumed: int = 0
    told_lost: int = 0
    cards_closed: int = 0
    cards_finished: int = 0  # ended with their recorded answer, not answered again
    skipped: int = 0


async def recover(
    store: Store,
    handler: MessageHandler,
    runtime_of: Callable[[str], ChannelRuntime | None],
    unfinished: Sequence[JournalEntry],
    *,
    freshness: timedelta,
    now: datetime,
) -> RecoveryReport:
    """Resume the `unfinished` journal rows (`store.journal_unfinished()`, read before the
    channels started) of running channels; the rest wait for their channel's next start."""
    report = RecoveryReport()
    for entry in unfinished:
        runtime = runtime_of(entry.channel_id)
        if runtime is None:
            report.skipped += 1
            continue
        try:
            await _recover_one(
                store, handler, runtime, entry, freshness=freshness, now=now, report=report
            )
        except (ChannelError, ValueError, KeyError) as exc:
            log.warning("recovery of journal row %s failed: %s", entry.id, exc)
            await store.journal_update(
                entry.id, state=JournalState.FAILED, error=f"recovery: {exc}"
            )
    if (
        report.resumed
        or report.told_lost
        or report.cards_closed
        or report.cards_finished
        or report.skipped
    ):
        log.info(
            "recovered after restart: %d answered again, %d told to resend, %d cards closed,"
            " %d cards finished with their recorded answer, %d waiting for their channel to start",
            report.resumed,
            report.told_lost,
            report.cards_closed,
            report.cards_finished,
            report.skipped,
        )
    return report


async def _recover_one(
    store: Store,
    handler: MessageHandler,
    runtime: ChannelRuntime,
    entry: JournalEntry,
    *,
    freshness: timedelta,
    now: datetime,
    report: RecoveryReport,
) -> None:
    message = inbound_from_json(entry.payload)
    answer = await store.finishing_answer(entry.id) if entry.card_id else None
    if entry.card_id and answer is not None:
        # the final text may have reached the user already: send it again (the same full text)
        stream = await runtime.provider.resume_stream(message, entry.card_id, entry.delivered_text)
        try:
            await stream.finish(answer)
        except ChannelError:
            # best effort: never leave the card on "thinking", nor the stream unended
            with contextlib.suppress(ChannelError):
                await stream.fail(INTERRUPTED_NOTE, partial_text=entry.delivered_text)
            raise
        await store.reply_ended(
            entry.id, state=JournalState.REPLIED, delivered_text=stream.delivered.text
        )
        report.cards_finished += 1
        return
    if entry.card_id:
        # never leave a card on "thinking": it keeps what it showed, plus a note
        stream = await runtime.provider.resume_stream(message, entry.card_id, entry.delivered_text)
        await stream.fail(INTERRUPTED_NOTE, partial_text=entry.delivered_text)
        report.cards_closed += 1
    if now - entry.created_at <= freshness:
        resumed = entry.state is JournalState.REPLYING
        handler.submit(Job.of(entry.id, message, runtime, resumed=resumed))
        report.resumed += 1
        return
    excerpt = message.text if len(message.text) <= 60 else message.text[:57] + "..."
    await runtime.provider.send(message, LOST_TEXT.format(excerpt=excerpt))
    await store.journal_update(entry.id, state=JournalState.FAILED, error="lost in a restart")
    report.told_lost += 1
