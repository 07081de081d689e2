"""One answer, from a queued job to a settled journal row.

The per-reply path, each step once: the user (remembered after the first sight), the conversation
and its history (one read), the LLM (asked as soon as a slot is free, read by one task), the reply
stream, then one write that moves the row to `replying` with its card and stores the user's turn,
at most one write per update that changed what the user sees (recorded beside the delivery,
latest wins), one write that stores the complete answer's turn before its final text is sent (so
a crash right after the user got it is not answered again; one statement, as the final text
waits for it), and one write that records the outcome. With the journal write before the ack,
an answer costs five store transactions plus one per such update: six for a short one
(tests/test_store_round_trips.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from agents.base import Agent, AgentRequest, Turn
from agents.faq import FaqAgent
from agents.routes import MessageFacts
from channels.commands import HELP_TEXT, NEW_TEXT, Command
from channels.conversations import AnswerSlots, Job, WorkerKey, direct_key
from channels.emitter import ReplyOutcome
from channels.live import AgentProfile, ChannelRuntime, RuntimeRetired
from channels.model import ChatType, InboundMessage, describe_attachment
from channels.observer import Observer
from channels.prefetch import PrefetchedAnswer
from channels.users.resolver import Resolution, UserResolver
from common.backoff import Backoff
from storage.repository import AnswerTurn, JournalState, MessageRecord, Store

log = logging.getLogger(__name__)

# Pauses between attempts at recording a reply's outcome: 0.1, 0.3, 0.9 and 2.7 s. A SQLite write
# lock held by another process (a backup, a migration) past the busy timeout usually clears within
# these; a row left unfinished would be answered again after a restart.
SETTLE_BACKOFF = Backoff(initial=0.1, factor=3.0, maximum=3.0, jitter=0.0)
SETTLE_RETRIES = 4


async def timed(deltas: AsyncIterator[str], agent: str, observer: Observer) -> AsyncIterator[str]:
    """Passes deltas through and reports how long the whole answer took to generate."""
    began = time.monotonic()
    try:
        async for delta in deltas:
            yield delta
    finally:
        observer.llm_request(agent, time.monotonic() - began)


class Answerer:
    """Answers one job on the runtime it is given; the handler owns the order of the jobs."""

    def __init__(
        self,
        store: Store,
        *,
        slots: AnswerSlots,
        observer: Observer,
        clock: Callable[[], datetime],
        users: UserResolver | None = None,
    ) -> None:
        self._store = store
        # who wrote; without a resolver, each platform identity is a user of its own
        self._users = users or UserResolver(store, None, clock=clock, observer=observer)
        self._slots = slots  # the daemon's cap on answers in progress, shared by every channel
        self._observer = observer
        self._clock = clock
        # the runtime each worker's answer in progress runs on (a stopped channel's are cut short)
        self._answering: dict[WorkerKey, ChannelRuntime] = {}

    async def answer(self, runtime: ChannelRuntime, job: Job) -> None:
        """Answer `job` and settle its journal row; raises what cut it short (the row unsettled).

        A channel that stops before the answer showed anything hands the job on to whatever
        replaced it (none: the row fails "channel stopped"); an answer that showed something ends
        on the channel it began on, whose HTTP client waits for it.
        """
        while True:
            self._answering[job.worker_key] = runtime
            try:
                with runtime.answering():
                    await self._answer_on(runtime, job)
                return
            except RuntimeRetired:
                pass
            finally:
                del self._answering[job.worker_key]
            following = await runtime.current()
            if following is None:
                await self._store.journal_update(
                    job.entry_id, state=JournalState.FAILED, error="channel stopped"
                )
                return
            runtime = following

    def answering_on(self, runtime: ChannelRuntime) -> list[WorkerKey]:
        """The workers whose answer in progress runs on `runtime`."""
        return [key for key, on in self._answering.items() if on is runtime]

    async def _answer_on(self, runtime: ChannelRuntime, job: Job) -> None:
        message, config = job.message, runtime.config
        now = self._clock()
        # the platform is asked who a new sender is here, after the ack (enrich)
        resolution = await self._users.resolve(
            message, lambda: runtime.provider.sender_profile(message)
        )
        if resolution.refused or resolution.blocked:
            await self._turn_away(runtime, job, resolution)
            return
        user_id = resolution.user_id
        # the agent that answers unless the FAQ does: chosen before the history is read, whose
        # length is the chosen agent's
        routed = _route(runtime, job, resolution)
        profile = routed[1] if routed is not None else _own_profile(runtime)
        if job.command is Command.HELP:
            await self._reply_plain(runtime, job, HELP_TEXT)
            return
        if job.command is Command.NEW:
            conversation = await self._store.start_new_conversation(
                message.channel_id, job.key, user_id, now=now
            )
            if not job.text:
                await self._reply_plain(runtime, job, NEW_TEXT)
                return
            history: list[MessageRecord] = []  # a conversation that just began
        else:
            conversation, history = await self._store.conversation_with_history(
                message.channel_id,
                job.key,
                user_id,
                idle_reset=timedelta(minutes=config.idle_reset_minutes),
                now=now,
                limit=profile.history_messages,
                # a voice call before any chat opened the user's conversation under their id
                adopt=direct_key(message.sender.platform_id)
                if message.chat_type is ChatType.DIRECT
                else None,
            )
        request = AgentRequest(
            system_prompt=profile.system_prompt,
            history=tuple(
                Turn("user" if m.role == "user" else "assistant", m.content)
                for m in history
                # a resumed message's own turn is already stored; it is sent once, as the new turn
                if m.journal_id != job.entry_id
            ),
            user_text=job.text,
            user_id=user_id,
        )
        # a FAQ question is answered by its fixed text in place of the agent, down the same path
        hit = runtime.faq.match(job.text) if runtime.faq is not None else None
        agent: Agent = profile.agent if hit is None else FaqAgent(hit.entry.answer)
        # A burst across many conversations waits here for a slot, in order, rather than
        # opening an LLM stream and a card each at once.
        async with self._slots.hold():
            _still_running(runtime)  # the channel may have stopped while this waited
            # the LLM is asked now; the card and the journal follow while it thinks (a crash
            # before they are recorded leaves the row "received": answered again)
            deltas = agent.stream(request)
            if hit is None:
                deltas = timed(deltas, agent.name, self._observer)
                if routed is not None:
                    self._observer.route(message.channel_id, routed[0])
            else:
                self._observer.faq_answer(message.channel_id)
            answer = PrefetchedAnswer(deltas, name=f"llm-{message.channel_id}")
            try:
                await self._reply_streamed(runtime, job, conversation.id, now, answer)
            finally:
                await answer.aclose()

    async def _turn_away(self, runtime: ChannelRuntime, job: Job, resolution: Resolution) -> None:
        """Someone nothing may be answered for: refused (told every time) or blocked (told at
        most once a day, silence otherwise); no agent is asked, no conversation opened."""
        if resolution.refused:
            await self._reply_plain(runtime, job, self._users.refused_text)
        elif await self._users.block_notice_due(resolution.user_id):
            await self._reply_plain(runtime, job, self._users.blocked_text)
        else:
            await self._store.journal_update(
                job.entry_id, state=JournalState.FAILED, error="blocked"
            )

    async def _reply_streamed(
        self,
        runtime: ChannelRuntime,
        job: Job,
        conversation_id: str,
        now: datetime,
        answer: PrefetchedAnswer,
    ) -> None:
        message = job.message
        _still_running(runtime)
        stream = await runtime.provider.open_stream(message)
        try:
            # before anything shows: after a crash, recovery finds the card and the user's turn
            await self._store.reply_begun(
                job.entry_id,
                conversation_id,
                card_id=stream.delivered.card_id,
                question=None if job.resumed else job.text,
                now=now,
            )
        except BaseException:
            # not recorded (a storage error, a shutdown): the row stays "received" to be answered
            # again, and the card must not stay on "thinking"
            await runtime.emitter.abandon(answer, stream)
            raise

        async def record_progress(shown: str) -> None:
            # what reached the user survives a crash, so recovery never repeats or loses it;
            # best effort: a busy database must not cut the answer short (the next one catches up)
            try:
                # a platform that posts its message at the first text (channels/edits.py) has
                # its card id only now: recovery then ends that message rather than a new one
                await self._store.journal_update(
                    job.entry_id, delivered_text=shown, card_id=stream.delivered.card_id
                )
            except Exception as exc:  # noqa: BLE001 - any storage failure; logged, reply goes on
                log.warning("channel %s: progress not recorded: %s", message.channel_id, exc)

        recorded = False  # the answer is stored ahead of its final text

        async def record_answer(text: str) -> None:
            # best effort too: without it a crash in the final call's wake is answered again
            nonlocal recorded
            try:
                await self._store.reply_finishing(
                    job.entry_id, AnswerTurn(conversation_id, text, self._clock())
                )
            except Exception as exc:  # noqa: BLE001 - any storage failure; logged, reply goes on
                log.warning("channel %s: answer not recorded: %s", message.channel_id, exc)
            else:
                recorded = True

        result = await runtime.emitter.emit(
            answer, stream, on_progress=record_progress, on_final=record_answer
        )
        self.count(message, result.outcome)
        if result.first_update_at is not None:
            self._observer.reply_first_update(
                message.channel_id, message.platform, result.first_update_at - job.accepted_at
            )
        if result.outcome is ReplyOutcome.REPLIED:
            turn = None if recorded else AnswerTurn(conversation_id, result.text, self._clock())
            await self.settle(
                job.entry_id,
                state=JournalState.REPLIED,
                delivered_text=result.delivered,
                answer=turn,
            )
        else:
            await self.settle(
                job.entry_id,
                state=JournalState.FAILED,
                delivered_text=result.delivered,
                error=result.error,
                forget_answer=True,  # the history holds only answers that reached the user
            )

    def count(self, message: InboundMessage, outcome: ReplyOutcome) -> None:
        """Report how a reply ended."""
        self._observer.reply(message.channel_id, message.platform, outcome.value)

    async def not_begun(self, entry_id: int) -> bool:
        """Nothing of the answer has been recorded as sent: the journal row was never moved on."""
        entry = await self._store.journal_get(entry_id)
        return entry is not None and entry.state is JournalState.RECEIVED

    async def settle(self, entry_id: int, **fields: Any) -> None:
        """Record a reply's outcome (and the answer's turn), riding out a briefly busy database."""

        async def update() -> None:
            await self._store.reply_ended(entry_id, **fields)

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
        _still_running(runtime)
        await runtime.provider.send(job.message, text)
        await self._store.journal_update(
            job.entry_id, state=JournalState.REPLIED, delivered_text=text
        )


def _own_profile(runtime: ChannelRuntime) -> AgentProfile:
    """The channel's own agent, as a route's would be."""
    return AgentProfile(runtime.agent, runtime.system_prompt, runtime.history_messages)


def _route(
    runtime: ChannelRuntime, job: Job, resolution: Resolution
) -> tuple[str, AgentProfile] | None:
    """The agent `[[routes]]` picks for the job, and its profile; None: the channel's own."""
    routing = runtime.routing
    if routing is None or not routing.table:
        return None
    message = job.message
    # the user's own words: the notes naming attachments (channels/convert.py) are not theirs
    notes = {describe_attachment(a) for a in message.attachments}
    text = "\n".join(line for line in job.text.split("\n") if line not in notes)
    kinds = {a.kind for a in message.attachments}
    if text.strip():
        kinds.add("text")
    facts = MessageFacts(
        channel=message.channel_id,
        platform=message.platform,
        groups=resolution.groups,
        text=text,
        content_types=frozenset(kinds),
    )
    return routing.choose(facts)


def _still_running(runtime: ChannelRuntime) -> None:
    """Raise RuntimeRetired when `runtime`'s channel stopped: nothing may begin on it now."""
    # checked right before the first platform call, with no await in between: once the reply
    # holds the provider's HTTP client, the channel may stop and the reply still ends properly
    if runtime.retired:
        raise RuntimeRetired(runtime.config.id)
