"""From an inbound message to its answer's turn: journal, dedupe, commands, ordered workers.

The provider acks the platform as soon as `accept()` returns, so `accept()` does only what must
happen before the ack (the journal write) and hands the rest to a per-conversation worker, which
answers one job at a time (channels/answering.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from channels.answering import Answerer
from channels.callbacks import Intake
from channels.commands import (
    NOTHING_TO_STOP_TEXT,
    OVERFLOW_ERROR,
    OVERFLOW_TEXT,
    QUEUED_TEXT,
    STOPPED_TEXT,
    Command,
)
from channels.conversations import AnswerSlots, ConversationWorker, Job, WorkerKey
from channels.emitter import ReplyOutcome
from channels.live import ChannelRuntime
from channels.model import ChatType, InboundMessage, inbound_to_json
from channels.observer import UNSTORABLE, NullObserver, Observer
from channels.users.resolver import UserResolver
from common.errors import ChannelError, TransientError
from storage.errors import describe as describe_storage_error
from storage.errors import unstorable
from storage.repository import JournalState, Store

log = logging.getLogger(__name__)


class MessageHandler:
    """Owns every conversation worker and side task; `close()` ends them all."""

    def __init__(
        self,
        store: Store,
        *,
        slots: AnswerSlots,
        observer: Observer | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        users: UserResolver | None = None,
    ) -> None:
        self._store = store
        self._observer = observer or NullObserver()
        self._answerer = Answerer(
            store, slots=slots, observer=self._observer, clock=clock, users=users
        )
        self._workers: dict[WorkerKey, ConversationWorker] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- intake (before the ack) ----------------------------------------------------------------

    async def accept(self, message: InboundMessage, runtime: ChannelRuntime) -> None:
        """Journal the message (or recognise a redelivery); answering happens later."""
        self._check_open()
        if not self._for_the_bot(message):
            return
        try:
            entry_id = await self._store.journal_accept(
                message.channel_id,
                message.message_id,
                message.frame_id or None,
                inbound_to_json(message),
            )
        except Exception as exc:
            if self._dropped_unstorable(exc, message):
                return
            raise _not_journaled(exc) from exc
        self._journaled(entry_id, message, runtime)

    async def accept_batch(
        self, messages: Sequence[InboundMessage], runtime: ChannelRuntime
    ) -> Intake:
        """Journal a callback's messages in one transaction, then queue them as `accept` does."""
        self._check_open()
        wanted = [message for message in messages if self._for_the_bot(message)]
        ignored = len(messages) - len(wanted)
        if not wanted:
            return Intake(ignored=ignored)
        rows = [(message.message_id, inbound_to_json(message)) for message in wanted]
        try:
            entry_ids = await self._store.journal_accept_batch(runtime.config.id, rows)
        except Exception as exc:
            if not unstorable(exc):
                raise _not_journaled(exc) from exc
            # one message the database refuses must not hold back the others: each alone
            duplicates = 0
            for message in wanted:
                duplicates += await self._accept_alone(message, runtime)
            return Intake(len(wanted) - duplicates, duplicates, ignored)
        for entry_id, message in zip(entry_ids, wanted, strict=True):
            self._journaled(entry_id, message, runtime)
        duplicates = entry_ids.count(None)
        return Intake(len(wanted) - duplicates, duplicates, ignored)

    async def _accept_alone(self, message: InboundMessage, runtime: ChannelRuntime) -> int:
        """`accept` for one message of a batch the database refused; 1 if it was a duplicate."""
        try:
            entry_id = await self._store.journal_accept(
                message.channel_id, message.message_id, None, inbound_to_json(message)
            )
        except Exception as exc:
            if self._dropped_unstorable(exc, message):
                return 0
            raise _not_journaled(exc) from exc
        self._journaled(entry_id, message, runtime)
        return int(entry_id is None)

    def _check_open(self) -> None:
        if self._closing:
            raise ChannelError("shutting down")  # no ack: the platform may deliver it again

    def _for_the_bot(self, message: InboundMessage) -> bool:
        """Group messages reach the bot only when they mention it."""
        if message.chat_type is ChatType.GROUP and not message.bot_mentioned:
            self._observer.message_ignored(message.channel_id, message.platform)
            return False
        return True

    def _dropped_unstorable(self, exc: Exception, message: InboundMessage) -> bool:
        """Whether the journal write failed on a message the database can never store."""
        if not unstorable(exc):
            return False
        # The database refused the values themselves (normalisation should have made that
        # impossible): a redelivery would fail the same way, forever. Returning acks it; it is
        # counted and logged once, by id, never by its text.
        self._observer.frame_dropped(message.channel_id, message.platform, UNSTORABLE)
        log.error(
            "channel %s: message %r cannot be stored (%s); acked and dropped",
            message.channel_id,
            message.message_id[:80],
            describe_storage_error(exc),
        )
        return True

    def _journaled(
        self, entry_id: int | None, message: InboundMessage, runtime: ChannelRuntime
    ) -> None:
        """Queue a journaled message on its conversation's worker; a redelivery is dropped."""
        if entry_id is None:
            self._observer.message_duplicate(message.channel_id, message.platform)
            log.info("channel %s: redelivered message ignored", message.channel_id)
            return
        job = Job.of(entry_id, message, runtime)
        if job.command is Command.STOP:
            worker = self._workers.get(job.worker_key)  # this channel's bot only
            stopped = worker is not None and worker.stop_current()
            self._spawn(self._reply_command(job, STOPPED_TEXT if stopped else NOTHING_TO_STOP_TEXT))
            return
        self.submit(job)

    def submit(self, job: Job) -> None:
        """Queue a journaled message on its conversation's worker (also used by recovery)."""
        key = job.worker_key
        worker = self._workers.get(key)
        if worker is None:
            limit = job.runtime.config.queue_limit
            worker = ConversationWorker(key, self._answer, limit=limit, on_idle=self._retire)
            self._workers[key] = worker
        ahead = worker.submit(job)
        if ahead is None:
            # one notice per burst, not one per message; each refused message is journaled
            notice = OVERFLOW_TEXT if worker.overflow_notice_due() else None
            self._spawn(self._refuse(job, notice))
        elif ahead > 0:
            self._spawn(self._notify(job, QUEUED_TEXT.format(ahead=ahead)))

    # -- answering (in the conversation's worker) -----------------------------------------------

    async def _answer(self, job: Job) -> None:
        message = job.message
        # the channel may have been restarted since: its replacement answers
        runtime = await job.runtime.current()
        if runtime is None:
            await self._store.journal_update(
                job.entry_id, state=JournalState.FAILED, error="channel stopped"
            )
            return
        try:
            await self._answerer.answer(runtime, job)
        except asyncio.CancelledError:
            # shutdown before anything was sent (e.g. waiting for an answer slot): the row stays
            # "received" and the next start answers it, as after a crash
            if self._closing and await self._answerer.not_begun(job.entry_id):
                raise
            # its final text did not complete: an answer stored ahead of it goes
            await self._store.reply_ended(
                job.entry_id, state=JournalState.FAILED, error="stopped", forget_answer=True
            )
            self._answerer.count(message, ReplyOutcome.CANCELLED)
            raise
        except Exception as exc:
            if not isinstance(exc, ChannelError):
                log.exception("channel %s: answering failed", message.channel_id)
            else:
                log.warning("channel %s: answering failed: %s", message.channel_id, exc)
            self._answerer.count(message, ReplyOutcome.FAILED)
            await self._answerer.settle(
                job.entry_id,
                state=JournalState.FAILED,
                error=f"{type(exc).__name__}: {exc}",
                forget_answer=True,
            )

    def cut_short(self, runtime: ChannelRuntime) -> int:
        """Stop the answers still in progress on a stopped channel's `runtime` as a shutdown
        does (each card says it stopped); returns how many."""
        workers = (self._workers.get(key) for key in self._answerer.answering_on(runtime))
        return sum(1 for worker in workers if worker is not None and worker.stop_current())

    async def _reply_command(self, job: Job, text: str) -> None:
        try:
            await job.runtime.provider.send(job.message, text)
        except ChannelError as exc:
            await self._store.journal_update(
                job.entry_id, state=JournalState.FAILED, error=str(exc)
            )
            return
        await self._store.journal_update(
            job.entry_id, state=JournalState.REPLIED, delivered_text=text
        )

    async def _refuse(self, job: Job, notice: str | None) -> None:
        """Journal a message a full queue refused, with why; send the burst's notice if due."""
        error = OVERFLOW_ERROR
        if notice is not None:
            try:
                await job.runtime.provider.send(job.message, notice)
            except ChannelError as exc:
                error, notice = f"{OVERFLOW_ERROR}; the notice failed: {exc}", None
        await self._store.journal_update(
            job.entry_id, state=JournalState.FAILED, delivered_text=notice, error=error
        )

    async def _notify(self, job: Job, text: str) -> None:
        try:
            await job.runtime.provider.send(job.message, text)
        except ChannelError as exc:
            log.info("channel %s: could not send a notice: %s", job.message.channel_id, exc)

    # -- ownership ------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _retire(self, worker: ConversationWorker) -> None:
        if self._workers.get(worker.key) is worker:
            del self._workers[worker.key]

    def busy(self) -> bool:
        return any(w.busy for w in self._workers.values()) or bool(self._side_tasks)

    async def drain(self, within: float) -> bool:
        """Stop intake and let answers in progress finish for up to `within` seconds."""
        self._closing = True  # new messages go unacked: the platform keeps them
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self.busy():  # noqa: ASYNC110  (workers come and go; no single event)
                    await asyncio.sleep(0.05)
        return not self.busy()

    async def close(self) -> None:
        """Stop intake and cancel every worker and side task; cut-short cards say so."""
        self._closing = True
        workers = list(self._workers.values())
        self._workers.clear()
        await asyncio.gather(*(w.cancel() for w in workers))
        tasks = list(self._side_tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _not_journaled(exc: Exception) -> TransientError:
    """Not journaled, so not acked: the platform delivers it again (e.g. SQLite locked past its
    busy timeout); the provider keeps its session for the next delivery."""
    return TransientError(f"journal write failed: {describe_storage_error(exc)}")
