"""Drive one reply: push an agent's answer into a ReplyStream at a pace the platform can take.

Latest wins: the answer is read by its own task (a PrefetchedAnswer, started when the agent was
asked) and never waits on the platform; the driver sends the whole text so far whenever it
changed, one platform call at a time, at least `min_interval` apart, each call paid for with a
token from the channel's shared bucket. Intermediate states that came and went during a call are
skipped, never queued. The emitter knows no platform: fallbacks (card to messages) happen inside
the ReplyStream, which keeps taking the same calls.

The final text is retried until it lands or a deadline passes; then, and when the agent fails or
answers nothing, the reply ends through `fail()` with the partial text. `on_progress(shown)` is
handed what the user sees after an update that changed it (the stream's delivered text), so the
owner can record it; it runs beside the delivery (a slow record delays neither the next update
nor the final text), one call at a time, latest wins, and has ended when `emit` returns. What
the user saw in the end is the result's `delivered`. `on_final(text)` runs once, beside the
final call's pause and token wait, and has ended before the complete answer is first sent, so
the owner can record it ahead of the call (after a crash
between the call and the outcome's record, recovery then ends the card with it rather than
answering again). Cancellation (a /stop, a shutdown) ends the reply with `fail("(stopped)")`,
then propagates.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.prefetch import PrefetchedAnswer
from channels.provider import ReplyStream
from channels.ratelimit import Clock, Sleep, TokenBucket
from common.backoff import Backoff
from common.errors import ChannelError, RateLimited, TransientError

log = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]

# Pauses between attempts at the final text: 0.5 s doubling up to 5 s. No jitter: the channel's
# shared bucket already spreads the calls of concurrent replies.
FINAL_RETRY_BACKOFF = Backoff(initial=0.5, maximum=5.0, jitter=0.0)


@dataclass(frozen=True, slots=True)
class EmitterSettings:
    """Timing and user-facing texts of the response emitter."""

    min_interval: float = 0.3  # seconds between the starts of two platform calls of one reply
    # the final call waits only this long after the previous one (the answer is complete: every
    # millisecond is visible); 0.1 s keeps Feishu's 10 operations per second per card
    final_min_interval: float = 0.1
    final_retry_deadline: float = 30.0  # how long the final text is retried before giving up
    cleanup_timeout: float = 5.0  # bound on the best-effort fail() after an error or a stop
    failure_text: str = "Sorry, I could not answer this time. Please try again."
    empty_text: str = "Sorry, I got an empty answer this time. Please try again."
    stopped_text: str = "(stopped)"


class ReplyOutcome(enum.StrEnum):
    """How a reply ended; doubles as a metric label."""

    REPLIED = "replied"
    FAILED = "failed"
    # Never returned by emit(), which re-raises CancelledError: the owner that catches it labels
    # the reply with this.
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class EmitResult:
    """What happened to one reply."""

    outcome: ReplyOutcome
    text: str  # everything the agent produced: the answer, or the partial text on failure
    error: str | None  # "ClassName: message" of what went wrong
    updates_sent: int  # intermediate updates that landed; the final call is not counted
    first_update_at: float | None  # clock time the first text landed (update or final call)
    delivered: str = ""  # what the stream says reached the user when the reply ended


class _ProgressRecorder:
    """Hands what the user sees to `on_progress` beside the delivery, never in its way.

    The owner's record may queue behind other writes (a burst's SQLite writer); the next update
    and the final text do not wait for it. One call at a time; a text that arrives meanwhile
    replaces any other still waiting (latest wins).
    """

    def __init__(self, hook: Progress | None) -> None:
        self._hook = hook
        self._reported = ""  # the last text handed over or waiting to be
        self._waiting: str | None = None
        self._task: asyncio.Task[None] | None = None

    def report(self, shown: str) -> None:
        """Record `shown` unless it was the last; raises what an earlier call raised."""
        self.check()
        if self._hook is None or shown == self._reported:
            return
        self._reported = shown
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(self._hook, shown), name="progress")
        else:
            self._waiting = shown

    def check(self) -> None:
        """Raise what the hook raised: a bug in the owner, which must not pass unseen."""
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error

    async def drain(self) -> None:
        """Let the call under way end; a text still waiting is dropped (the result carries it)."""
        self._waiting = None
        if self._task is None:
            return
        try:
            await self._task
        except Exception:
            # the reply has ended already: nothing left to fail, but the owner's bug is told
            log.exception("recording the reply's progress failed")

    async def stop(self) -> None:
        """Cancel the call under way (the reply is being cut short) and wait for it to end."""
        self._waiting = None
        task = self._task
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the reply is being cut short for another reason already

    async def _run(self, hook: Progress, text: str) -> None:
        while True:
            await hook(text)
            if self._waiting is None:
                return
            text, self._waiting = self._waiting, None


class _Reply:
    """State of one reply's delivery; the text comes from the answer's reading task."""

    def __init__(
        self, answer: PrefetchedAnswer, stream: ReplyStream, on_progress: Progress | None
    ) -> None:
        self.answer = answer
        self.stream = stream
        self.progress = _ProgressRecorder(on_progress)
        self.updates_enabled = True
        self.token_held = False  # a token taken for an update that the end made unnecessary
        self.last_call_at: float | None = None
        self.updates_sent = 0
        self.first_update_at: float | None = None

    @property
    def text(self) -> str:
        return self.answer.text

    @property
    def ended(self) -> bool:
        return self.answer.done


class ResponseEmitter:
    """Streams agents' answers into ReplyStreams for one channel, within its shared rate budget."""

    def __init__(
        self,
        bucket: TokenBucket,
        settings: EmitterSettings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._bucket = bucket
        self._settings = settings
        self._clock = clock
        self._sleep = sleep

    async def emit(
        self,
        answer: PrefetchedAnswer,
        stream: ReplyStream,
        *,
        on_progress: Progress | None = None,
        on_final: Progress | None = None,
    ) -> EmitResult:
        """Deliver the agent's answer into `stream`; if cancelled, end the reply and re-raise.

        The answer's reading has ended when this returns or raises (stopped if need be).
        """
        reply = _Reply(answer, stream, on_progress)
        try:
            result = await self._deliver(reply, on_final)
        except asyncio.CancelledError:
            # Re-raised so that the owner (a /stop, a shutdown, a timeout) sees its cancellation.
            await answer.aclose(self._settings.cleanup_timeout)
            await reply.progress.stop()
            await self._fail_quietly(reply, self._settings.stopped_text)
            raise
        except Exception:
            # A bug below (the hooks, the stream) must not leave the card "thinking" forever.
            await answer.aclose(self._settings.cleanup_timeout)
            await reply.progress.stop()
            await self._fail_quietly(reply, self._settings.failure_text)
            raise
        # the owner records the outcome next: no progress record may land after it
        await reply.progress.drain()
        return result

    async def _deliver(self, reply: _Reply, on_final: Progress | None) -> EmitResult:
        await self._drive_updates(reply)
        try:
            await reply.answer.result()
        except ChannelError as exc:
            return await self._fail(reply, self._settings.failure_text, _describe(exc))
        except Exception as exc:
            log.exception("the agent failed with an unclassified error")
            return await self._fail(reply, self._settings.failure_text, _describe(exc))
        if not reply.text.strip():
            return await self._fail(reply, self._settings.empty_text, "empty answer")
        reply.progress.check()
        # the answer is recorded while the final call waits for its pause and its token: the
        # final text leaves only once it is (a crash right after must not answer twice)
        recording = None if on_final is None else asyncio.ensure_future(on_final(reply.text))
        try:
            return await self._finish(reply, recording)
        finally:
            if recording is not None:
                await asyncio.wait({recording})  # one store write: never left behind

    @staticmethod
    async def _recorded(recording: asyncio.Future[None] | None) -> None:
        if recording is not None:
            await asyncio.shield(recording)

    async def abandon(self, answer: PrefetchedAnswer, stream: ReplyStream) -> None:
        """End a reply that will not be delivered (it could not be recorded): stop reading the
        answer and, best effort and bounded, end the stream with the failure text."""
        await answer.aclose(self._settings.cleanup_timeout)
        await self._fail_quietly(_Reply(answer, stream, None), self._settings.failure_text)

    async def _drive_updates(self, reply: _Reply) -> None:
        """Send the latest text whenever it changed, until the agent is done."""
        changed = reply.answer.changed
        while True:
            await changed.wait()
            if reply.ended:
                return
            if not reply.updates_enabled:
                changed.clear()
                continue
            await self._pace_unless_ended(reply)
            if reply.ended:
                return  # the final call carries it all, without waiting out this pause
            await self._bucket.acquire()
            if reply.ended:
                reply.token_held = True
                return
            # Cleared right before the snapshot: whatever arrives during the call triggers the next.
            changed.clear()
            await self._update(reply, reply.text)

    async def _update(self, reply: _Reply, text: str) -> None:
        reply.last_call_at = self._clock()
        try:
            await reply.stream.update(text)
        except RateLimited as exc:
            self._bucket.penalize(exc.retry_after)
            log.info("update rate-limited (retry after %s s), skipped: %s", exc.retry_after, exc)
            return
        except TransientError as exc:
            log.info("update failed, skipped: %s", _describe(exc))
            return
        except ChannelError as exc:
            # Retrying a refused update only spends budget; the final call still gets its chance.
            reply.updates_enabled = False
            log.warning("update refused, no more updates for this reply: %s", _describe(exc))
            return
        reply.updates_sent += 1
        self._landed(reply)
        reply.progress.report(reply.stream.delivered.text)

    async def _finish(self, reply: _Reply, recording: asyncio.Future[None] | None) -> EmitResult:
        """Deliver the final text, retrying with backoff until it lands or the deadline passes."""
        # A RateLimited answer pauses the shared bucket for its retry_after, so the next attempt
        # waits for it there, and gives up at once when the pause outlasts the deadline.
        text = reply.text
        deadline = self._clock() + self._settings.final_retry_deadline
        pauses = FINAL_RETRY_BACKOFF.delays()
        error = "RateLimited: no call budget for the final text before the deadline"
        while (remaining := deadline - self._clock()) > 0:
            # The stream's calls carry their own timeouts; this only bounds the whole attempt.
            scope = asyncio.timeout(remaining)
            try:
                async with scope:
                    await self._pace(reply, final=True)
                    if not await self._take_token(reply, deadline - self._clock()):
                        break
                    await self._recorded(recording)
                    reply.last_call_at = self._clock()
                    await reply.stream.finish(text)
            except RateLimited as exc:
                self._bucket.penalize(exc.retry_after)
                error = _describe(exc)
            except TransientError as exc:
                error = _describe(exc)
            except ChannelError as exc:
                error = _describe(exc)
                break  # retrying cannot help
            except TimeoutError:
                if not scope.expired():
                    raise
                error = "TimeoutError: the final text did not land before the deadline"
                break
            else:
                self._landed(reply)
                return self._result(ReplyOutcome.REPLIED, reply, None)
            delay = next(pauses)
            if self._clock() + delay >= deadline:
                break
            log.info("final text not delivered, retrying in %.1f s: %s", delay, error)
            await self._sleep(delay)
        log.warning("giving up on the final text: %s", error)
        await self._recorded(recording)  # the owner forgets the answer after this; not before
        return await self._fail(reply, self._settings.failure_text, error)

    async def _fail(self, reply: _Reply, reason: str, error: str) -> EmitResult:
        problem = await self._fail_quietly(reply, reason)
        if problem is not None:
            error = f"{error}; telling the user failed too: {problem}"
        return self._result(ReplyOutcome.FAILED, reply, error)

    async def _fail_quietly(self, reply: _Reply, reason: str) -> str | None:
        """Best effort, bounded: end the reply showing `reason` and what the agent wrote."""
        timeout = self._settings.cleanup_timeout
        try:
            async with asyncio.timeout(timeout):
                await self._pace(reply)
                if not await self._take_token(reply, timeout):
                    # One call over the budget beats a card left "thinking" for good.
                    log.info("no call budget to end the reply in time; calling anyway")
                reply.last_call_at = self._clock()
                await reply.stream.fail(reason, partial_text=reply.text)
        except (ChannelError, TimeoutError) as exc:
            log.warning("could not end the reply: %s", _describe(exc))
            return _describe(exc)
        except Exception as exc:
            # A broken stream must not mask the outcome being reported.
            log.exception("ending the reply failed")
            return _describe(exc)
        return None

    def _landed(self, reply: _Reply) -> None:
        if reply.first_update_at is None:
            reply.first_update_at = self._clock()

    async def _pace(self, reply: _Reply, *, final: bool = False) -> None:
        if reply.last_call_at is not None:
            interval = self._settings.min_interval
            if final:
                interval = min(interval, self._settings.final_min_interval)
            wait = reply.last_call_at + interval - self._clock()
            if wait > 0:
                await self._sleep(wait)

    async def _pace_unless_ended(self, reply: _Reply) -> None:
        """The pause before an update, cut short when the answer is complete meanwhile."""
        if reply.last_call_at is None:
            return
        wait = reply.last_call_at + self._settings.min_interval - self._clock()
        if wait <= 0:
            return
        pause = asyncio.ensure_future(self._sleep(wait))
        end = asyncio.ensure_future(reply.answer.ended.wait())
        try:
            await asyncio.wait({pause, end}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (pause, end):
                waiter.cancel()
            await asyncio.gather(pause, end, return_exceptions=True)

    async def _take_token(self, reply: _Reply, max_wait: float) -> bool:
        if reply.token_held:
            reply.token_held = False
            return True
        return await self._bucket.acquire(max_wait)

    def _result(self, outcome: ReplyOutcome, reply: _Reply, error: str | None) -> EmitResult:
        delivered = reply.stream.delivered.text
        return EmitResult(
            outcome, reply.text, error, reply.updates_sent, reply.first_update_at, delivered
        )


def _describe(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
