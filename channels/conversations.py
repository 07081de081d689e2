"""Conversation keys, the ordered worker that answers one conversation at a time, answer slots."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from channels.commands import Command, command_of
from channels.live import ChannelRuntime
from channels.model import ChatType, InboundMessage


def direct_key(chat_id: str) -> str:
    """The conversation key of a direct chat (a voice call before any chat uses the user's id)."""
    return f"direct:{chat_id}"


def conversation_key(message: InboundMessage, group_context: str) -> str:
    """Direct chats: one per chat; groups: one per member unless the channel shares context."""
    if message.chat_type is ChatType.DIRECT:
        return direct_key(message.chat_id)
    if group_context == "shared":
        return f"group:{message.chat_id}"
    return f"group:{message.chat_id}:{message.sender.platform_id}"


# Whose worker answers a job: (channel id, conversation key). Two bots in one group chat see the
# same chat and sender, so the same key: each must answer on its own, and a /stop sent to one
# must not stop the other. (Stored conversations are per channel already: storage keys them by
# channel id and key.)
WorkerKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Job:
    """A journaled message to answer, parsed once: its conversation and its command."""

    entry_id: int  # journal row
    message: InboundMessage
    runtime: ChannelRuntime  # of the channel the message came from
    key: str  # the conversation (conversation_key)
    command: Command
    text: str  # the message's text without the command word
    accepted_at: float = field(default_factory=time.monotonic)  # for first-update latency
    resumed: bool = False  # recovered after a restart with the user's turn already stored

    @classmethod
    def of(
        cls,
        entry_id: int,
        message: InboundMessage,
        runtime: ChannelRuntime,
        *,
        resumed: bool = False,
    ) -> Job:
        """The job for a journaled message, its key and command parsed here and only here."""
        command, text = command_of(message.text)
        key = conversation_key(message, runtime.config.group_context)
        return cls(entry_id, message, runtime, key, command, text, resumed=resumed)

    @property
    def worker_key(self) -> WorkerKey:
        """The worker that answers it: the conversation's, within its channel."""
        return (self.message.channel_id, self.key)


class AnswerSlots:
    """The daemon-wide cap on answers being written; the daemon owns it, every channel shares it.

    Waiters are served in arrival order, and a conversation's worker waits with its queue behind
    it, so each conversation's messages are still answered in order.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit)
        self.running = 0
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Wait for a free slot and keep it for the body."""
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._semaphore.release()


class ConversationWorker:
    """Answers one conversation's messages in order; the task exists only while there is work."""

    def __init__(
        self,
        key: WorkerKey,
        answer: Callable[[Job], Coroutine[Any, Any, None]],
        *,
        limit: int,
        on_idle: Callable[[ConversationWorker], None],
    ) -> None:
        self.key = key
        self._answer = answer
        self._limit = limit
        self._on_idle = on_idle
        self._queue: deque[Job] = deque()
        self._task: asyncio.Task[None] | None = None
        self._current: asyncio.Task[None] | None = None
        self._overflow_told = False  # this burst's overflow notice went out

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def submit(self, job: Job) -> int | None:
        """Queue a job; returns how many are ahead of it, or None when the queue is full."""
        ahead = len(self._queue) + (1 if self._current is not None else 0)
        if len(self._queue) >= self._limit:
            return None
        self._queue.append(job)
        if not self.busy:
            channel, key = self.key
            self._task = asyncio.create_task(self._run(), name=f"conversation-{channel}-{key}")
        return ahead

    def overflow_notice_due(self) -> bool:
        """True for the first message a full queue refuses; the rest of the burst goes quietly.

        Re-armed once the queue has drained (every waiting message taken up): a steady flood gets
        one notice, not one per message, and a later burst gets its own.
        """
        due, self._overflow_told = not self._overflow_told, True
        return due

    def stop_current(self) -> bool:
        """Cancel the answer being written (`/stop`); queued messages still get answered."""
        if self._current is None or self._current.done():
            return False
        self._current.cancel()
        return True

    async def _run(self) -> None:
        try:
            while self._queue:
                job = self._queue.popleft()
                if not self._queue:
                    self._overflow_told = False
                self._current = asyncio.create_task(self._answer(job))
                try:
                    await self._current
                except asyncio.CancelledError:
                    if self._current.cancelled() and not self._cancelling():
                        continue  # only the answer was stopped; keep serving the queue
                    raise
                finally:
                    self._current = None
        finally:
            if not self._queue:
                self._on_idle(self)

    def _cancelling(self) -> bool:
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    async def cancel(self) -> None:
        """End the worker and its answer in progress; queued jobs stay in the journal."""
        self._queue.clear()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
