"""From an inbound message to an answer: journal, dedupe, users, conversations, commands, workers.

The provider acks the platform as soon as `accept()` returns, so `accept()` does only what must
happen before the ack (the journal write) and hands the rest to a per-conversation worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.base import AgentRequest, Turn
from channels.commands import (
    HELP_TEXT,
    NEW_TEXT,
    NOTHING_TO_STOP_TEXT,
    OVERFLOW_ERROR,
    OVERFLOW_TEXT,
    QUEUED_TEXT,
    STOPPED_TEXT,
    Command,
)
from channels.conversations import AnswerSlots, ConversationWorker, Job
from channels.emitter import ReplyOutcome
from channels.live import ChannelRuntime
from channels.model import ChatType, InboundMessage, inbound_to_json
from channels.observer import UNSTORABLE, NullObserver, Observer
from channels.prefetch import PrefetchedAnswer
from common.backoff import Backoff
from common.errors import ChannelError, TransientError
from storage.errors import describe as describe_storage_error
from storage.errors import unstorable
from storage.repository import JournalState, Store

log = logging.getLogger(__name__)

# Pauses between attempts at recording a reply's outcome: 0.1, 0.3, 0.9 and 2.7 s. A SQLite write
# lock held by another process (a backup, a migration) past the busy timeout usually clears within
# these; a row left unfinished would be answered again after a restart.
SETTLE_BACKOFF = Backoff(initial=0.1, factor=3.0, maximum=3.0, jitter=0.0)
SETTLE_RETRIES = 4


@dataclass
class HandlerCounters:
    received: int = 0
    duplicates: int = 0
    ignored: int = 0
    dropped: int = 0  # could not be stored, acked anyway
    replies: dict[str, int] = field(default_factory=dict)

    def reply(self, outcome: str) -> None:
        self.replies[outcome] = self.replies.get(outcome, 0) + 1


async def timed(deltas: AsyncIterator[str], agent: str, observer: Observer) -> AsyncIterator[str]:
    """Passes deltas through and reports how long the whole answer took to generate."""
    began = time.monotonic()
    try:
        async for delta in deltas:
            yield delta
    finally:
        observer.llm_request(agent, time.monotonic() - began)


class MessageHandler:
    """Owns every conversation worker and side task; `close()` ends them all."""

    def __init__(
        self,
        store: Store,
        *,
        slots: AnswerSlots,
        observer: Observer | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._slots = slots  # the daemon's cap on answers in progress, shared by every channel
        self._observer = observer or NullObserver()
        self._clock = clock
        self._workers: dict[str, ConversationWorker] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.counters = HandlerCounters()
        self._closing = False

    # -- intake (before the ack) ----------------------------------------------------------------

    async def accept(self, message: InboundMessage, runtime: ChannelRuntime) -> None:
        """Journal the message (or recognise a redelivery); answering happens later."""
        if self._closing:
            raise ChannelError("shutting down")  # no ack: the platform may deliver it again
        if message.chat_type is ChatType.GROUP and not message.bot_mentioned:
            self.counters.ignored += 1
            self._observer.message_ignored(message.channel_id, message.platform)
            return
        try:
            entry_id = await self._store.journal_accept(
                message.channel_id,
                message.message_id,
                message.frame_id or None,
                inbound_to_json(message),
            )
        except Exception as exc:
            if unstorable(exc):
                # The database refused the values themselves (normalisation should have made
                # that impossible): a redelivery would fail the same way, forever. Returning
                # acks it; it is counted and logged once, by id, never by its text.
                self.counters.dropped += 1
                self._observer.frame_dropped(message.channel_id, message.platform, UNSTORABLE)
                log.error(
                    "channel %s: message %r cannot be stored (%s); acked and dropped",
                    message.channel_id,
                    message.message_id[:80],
                    describe_storage_error(exc),
                )
                return
            # Not journaled, so not acked: the platform delivers it again (e.g. SQLite locked
            # past its busy timeout). The provider keeps its session for the next delivery.
            raise TransientError(f"journal write failed: {describe_storage_error(exc)}") from exc
        if entry_id is None:
            self.counters.duplicates += 1
            self._observer.message_duplicate(message.channel_id, message.platform)
            log.info("channel %s: redelivered message ignored", message.channel_id)
            return
        self.counters.received += 1
        job = Job.of(entry_id, message, runtime)
        if job.command is Command.STOP:
            worker = self._workers.get(job.key)
            stopped = worker is not None and worker.stop_current()
            self._spawn(self._reply_command(job, STOPPED_TEXT if stopped else NOTHING_TO_STOP_TEXT))
            return
        self.submit(job)

    def submit(self, job: Job) -> None:
        """Queue a journaled message on its conversation's worker (also used by recovery)."""
        worker = self._workers.get(job.key)
        if worker is None:
            limit = job.runtime.config.queue_limit
            worker = ConversationWorker(job.key, self._answer, limit=limit, on_idle=self._retire)
            self._workers[job.key] = worker
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
            await self._answer_with(runtime, job)
        except asyncio.CancelledError:
            # shutdown before anything was sent (e.g. waiting for an answer slot): the row stays
            # "received" and the next start answers it, as after a crash
            if self._closing and await self._not_begun(job.entry_id):
                raise
            await self._store.journal_update(
                job.entry_id, state=JournalState.FAILED, error="stopped"
            )
            self._count_reply(message, ReplyOutcome.CANCELLED)
            raise
        except Exception as exc:
            if not isinstance(exc, ChannelError):
                log.exception("channel %s: answering failed", message.channel_id)
            else:
                log.warning("channel %s: answering failed: %s", message.channel_id, exc)
            self._count_reply(message, ReplyOutcome.FAILED)
            await self._settle(
                job.entry_id, state=JournalState.FAILED, error=f"{type(exc).__name__}: {exc}"
            )

    async def _not_begun(self, entry_id: int) -> bool:
        """Nothing of the answer has been sent: the journal row was never moved on."""
        entry = await self._store.journal_get(entry_id)
        return entry is not None and entry.state is JournalState.RECEIVED

    async def _answer_with(self, runtime: ChannelRuntime, job: Job) -> None:
        message, config = job.message, runtime.config
        now = self._clock()
        user_id = await self._store.resolve_user(
            message.platform,
            message.tenant,
            message.sender.platform_id,
            message.sender.display_name,
        )
        key, text = job.key, job.text
        if job.command is Command.HELP:
            await self._reply_plain(runtime, job, HELP_TEXT)
            return
        if job.command is Command.NEW:
            await self._store.start_new_conversation(message.channel_id, key, user_id, now=now)
            if not text:
                await self._reply_plain(runtime, job, NEW_TEXT)
                return
        conversation = await self._store.current_conversation(
            message.channel_id,
            key,
            user_id,
            idle_reset=timedelta(minutes=config.idle_reset_minutes),
            now=now,
        )
        history = await self._store.recent_messages(conversation.id, runtime.history_messages)
        # a resumed message's own turn is already stored; it is sent once, as the new turn
        history = [m for m in history if m.journal_id != job.entry_id]
        request = AgentRequest(
            system_prompt=runtime.system_prompt,
            history=tuple(
                Turn("user" if m.role == "user" else "assistant", m.content) for m in history
            ),
            user_text=text,
            user_id=user_id,
        )
        # A burst across many conversations waits here for a slot, in order, rather than
        # opening an LLM stream and a card each at once.
        async with self._slots.hold():
            # the LLM is asked now; the journal, the card and the question's turn follow while
            # it thinks (a crash before the card exists leaves the row "received": answered again)
            answer = PrefetchedAnswer(
                timed(runtime.agent.stream(request), runtime.agent.name, self._observer),
                name=f"llm-{message.channel_id}",
            )
            try:
                await self._reply_streamed(
                    runtime, job, conversation_id=conversation.id, text=text, now=now, answer=answer
                )
            finally:
                await answer.aclose()

    async def _reply_streamed(
        self,
        runtime: ChannelRuntime,
        job: Job,
        *,
        conversation_id: str,
        text: str,
        now: datetime,
        answer: PrefetchedAnswer,
    ) -> None:
        message = job.message
        await self._store.journal_update(
            job.entry_id, state=JournalState.REPLYING, conversation_id=conversation_id
        )
        if not job.resumed:
            await self._store.append_message(
                conversation_id, "user", text, journal_id=job.entry_id, now=now
            )
        stream = await runtime.provider.open_stream(message)
        if stream.delivered.card_id:
            await self._store.journal_update(job.entry_id, card_id=stream.delivered.card_id)

        async def record_progress(shown: str) -> None:
            # what reached the user survives a crash, so recovery never repeats or loses it;
            # best effort: a busy database must not cut the answer short (the next one catches up)
            try:
                await self._store.journal_update(job.entry_id, delivered_text=shown)
            except Exception as exc:  # noqa: BLE001 - any storage failure; logged, reply goes on
                log.warning("channel %s: progress not recorded: %s", message.channel_id, exc)

        result = await runtime.emitter.emit(answer, stream, on_progress=record_progress)
        self._count_reply(message, result.outcome)
        if result.first_update_at is not None:
            self._observer.reply_first_update(
                message.channel_id, message.platform, result.first_update_at - job.accepted_at
            )
        delivered = result.delivered
        if result.outcome is ReplyOutcome.REPLIED:
            answered_at = self._clock()
            await self._with_retries(
                "the answer's turn",
                lambda: self._store.append_message(
                    conversation_id, "assistant", result.text, now=answered_at
                ),
            )
            await self._settle(job.entry_id, state=JournalState.REPLIED, delivered_text=delivered)
        else:
            await self._settle(
                job.entry_id,
                state=JournalState.FAILED,
                delivered_text=delivered,
                error=result.error,
            )

    async def _settle(self, entry_id: int, **fields: Any) -> None:
        """Record a reply's outcome in its journal row, riding out a briefly busy database."""

        async def update() -> None:
            await self._store.journal_update(entry_id, **fields)

        await self._with_retries(f"journal row {entry_id}", update)

    async def _with_retries(self, what: str, write: Callable[[], Awaitable[Any]]) -> None:
        """A storage write that matters after the user has their answer; never raises."""
        for delay in (*SETTLE_BACKOFF.delays(SETTLE_RETRIES), None):
            try:
                await write()
            except Exception as exc:  # noqa: BLE001 - any storage failure; retried, then logged
                if delay is None:
                    # the worker must go on serving its queue; recovery at the next start
                    # takes a row left unfinished for a message still to answer
                    log.error("could not record %s, giving up: %s", what, exc)
                    return
                log.warning("could not record %s (%s); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
            else:
                return

    async def _reply_plain(self, runtime: ChannelRuntime, job: Job, text: str) -> None:
        await runtime.provider.send(job.message, text)
        await self._store.journal_update(
            job.entry_id, state=JournalState.REPLIED, delivered_text=text
        )

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

    def _count_reply(self, message: InboundMessage, outcome: ReplyOutcome) -> None:
        self.counters.reply(outcome)
        self._observer.reply(message.channel_id, message.platform, outcome.value)

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
