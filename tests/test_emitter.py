"""ResponseEmitter against a recording ReplyStream (the platform boundary) in virtual time.

Agent, stream, emitter and bucket all sleep on one VirtualClock: time jumps to the next sleeper's
deadline once every runnable task has parked, so seconds of streaming take milliseconds and
timings measured on the clock are exact.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from channels.emitter import EmitResult, EmitterSettings, ReplyOutcome
from channels.prefetch import PrefetchedAnswer
from channels.ratelimit import TokenBucket
from common.errors import ChannelError, PermanentError, RateLimited, TransientError
from tests.emitter_support import (
    EPS,
    FakeAgent,
    ProgressLog,
    RecordingStream,
    VirtualClock,
    assert_paced,
    clock,
    make_emitter,
    words,
)

__all__ = ["clock"]  # the fixture


async def test_fast_deltas_are_coalesced_latest_wins(clock: VirtualClock) -> None:
    agent = FakeAgent(clock, words(200), gap=0.01)  # two seconds of streaming
    stream = RecordingStream(clock, latency=0.05)
    progress = ProgressLog()
    emitter = make_emitter(clock, min_interval=0.3)

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream, on_progress=progress)

    assert result.outcome is ReplyOutcome.REPLIED
    assert result.text == agent.text
    assert result.error is None
    updates = stream.of("update")
    assert 3 <= len(updates) <= 2.0 / 0.3 + 1  # one per interval at most, not one per delta
    texts = [call.text for call in updates]
    for shorter, longer in itertools.pairwise([*texts, agent.text]):
        assert longer.startswith(shorter)
        assert len(longer) > len(shorter)
    assert [call.kind for call in stream.calls][-1] == "finish"
    assert stream.of("finish")[0].text == agent.text
    assert stream.max_in_flight == 1
    assert_paced(updates, 0.3)
    assert_paced(stream.calls, 0.1)  # the final call may follow sooner: the answer is complete
    assert progress.texts == texts  # each update the user saw; the end is the result's
    assert result.delivered == agent.text
    assert result.updates_sent == len(updates)
    assert result.first_update_at == updates[0].ended
    assert agent.closed


async def test_the_final_call_waits_only_the_short_final_interval(clock: VirtualClock) -> None:
    # the answer ends 0.02 s after an update went out: the final text follows 0.1 s after that
    # update, not min_interval (0.5 s) after it
    agent = FakeAgent(clock, ["a ", "b "], gap=0.01)
    stream = RecordingStream(clock, latency=0.001)
    emitter = make_emitter(clock, min_interval=0.5, final_min_interval=0.1)

    await emitter.emit(PrefetchedAnswer(agent.stream()), stream)

    update, finish = stream.calls
    assert (update.kind, finish.kind) == ("update", "finish")
    assert 0.1 - EPS <= finish.started - update.started < 0.5


async def test_reading_the_agent_never_waits_on_the_platform(clock: VirtualClock) -> None:
    agent = FakeAgent(clock, words(50), gap=0.01)  # done after 0.5 s
    stream = RecordingStream(clock, latency=2.0)  # a very slow platform
    emitter = make_emitter(clock, min_interval=0.3)

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream)

    first = stream.calls[0]
    assert first.ended is not None
    assert max(agent.pulled_at) < first.ended  # everything was read during the first call
    assert [call.kind for call in stream.calls] == ["update", "finish"]  # the rest coalesced
    assert result.outcome is ReplyOutcome.REPLIED
    assert stream.calls[-1].text == agent.text


async def test_no_update_goes_out_without_new_text(clock: VirtualClock) -> None:
    agent = FakeAgent(clock, words(5), gap=1.0)  # a slow agent: one delta a second
    stream = RecordingStream(clock)
    emitter = make_emitter(clock, min_interval=0.3)

    await emitter.emit(PrefetchedAnswer(agent.stream()), stream)

    texts = [call.text for call in stream.of("update")]
    assert texts == ["".join(agent.deltas[: i + 1]) for i in range(4)]  # the fifth is the final
    assert stream.calls[-1].text == agent.text


async def test_a_shared_bucket_caps_the_rate_of_concurrent_replies(clock: VirtualClock) -> None:
    rate, burst = 4.0, 2
    bucket = TokenBucket(rate, burst, clock=clock, sleep=clock.sleep, quiet_period=100.0)
    emitter = make_emitter(clock, bucket=bucket, min_interval=0.1)
    agents = [FakeAgent(clock, words(100, f"r{n}-"), gap=0.02) for n in range(5)]
    streams = [RecordingStream(clock, latency=0.02) for _ in agents]

    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(emitter.emit(PrefetchedAnswer(agent.stream()), stream))
            for agent, stream in zip(agents, streams, strict=True)
        ]

    results = [task.result() for task in tasks]
    assert [r.outcome for r in results] == [ReplyOutcome.REPLIED] * 5
    assert [r.text for r in results] == [agent.text for agent in agents]
    starts = sorted(call.started for stream in streams for call in stream.calls)
    # A token bucket allows at most burst + rate x window calls in any window of time.
    for i, j in itertools.combinations(range(len(starts)), 2):
        assert j - i + 1 <= burst + rate * (starts[j] - starts[i]) + EPS, (i, j)
    # Unthrottled, five replies at 10 updates/s would make ~100 calls in these 2 s.
    assert len(starts) <= burst + rate * (starts[-1] - starts[0]) + EPS
    assert len(starts) >= 5 * 2  # yet every reply still streamed, not just finished
    assert all(len(stream.of("update")) >= 1 for stream in streams)
    assert all(stream.max_in_flight == 1 for stream in streams)


async def test_a_token_taken_just_before_the_end_carries_the_final_call(
    clock: VirtualClock,
) -> None:
    bucket = TokenBucket(1, 1, clock=clock, sleep=clock.sleep)
    emitter = make_emitter(clock, bucket=bucket, min_interval=0.3)
    agent = FakeAgent(clock, words(50), gap=0.01)  # done at 0.5 s, while waiting for a token
    stream = RecordingStream(clock)

    await emitter.emit(PrefetchedAnswer(agent.stream()), stream)

    update, finish = stream.calls
    assert (update.kind, finish.kind) == ("update", "finish")
    assert finish.started == pytest.approx(
        update.started + 1.0
    )  # the next token, not the one after


async def test_rate_limited_updates_slow_the_bucket_and_the_reply_completes(
    clock: VirtualClock,
) -> None:
    bucket = TokenBucket(20, 5, clock=clock, sleep=clock.sleep, quiet_period=100.0)
    emitter = make_emitter(clock, bucket=bucket, min_interval=0.1)
    agent = FakeAgent(clock, words(150), gap=0.01)
    limited = RateLimited("429 from the platform", retry_after=0.5)
    stream = RecordingStream(clock, update_faults=[None, limited])
    progress = ProgressLog()

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream, on_progress=progress)

    assert result.outcome is ReplyOutcome.REPLIED
    assert stream.calls[-1].kind == "finish"
    assert stream.calls[-1].text == agent.text
    assert bucket.rate == 10.0  # halved
    refused = stream.calls[1]
    assert refused.error is limited
    assert refused.ended is not None
    after = stream.calls[2]
    assert after.started >= refused.ended + 0.5 - EPS  # nobody called during the pause
    assert after.text.startswith(refused.text)
    assert len(after.text) > len(refused.text)
    assert refused.text not in progress.texts
    assert result.updates_sent == len([c for c in stream.of("update") if c.landed])


async def test_a_refused_update_stops_updates_but_the_final_text_lands(clock: VirtualClock) -> None:
    emitter = make_emitter(clock)
    agent = FakeAgent(clock, words(100), gap=0.01)
    stream = RecordingStream(clock, update_faults=[PermanentError("card streaming denied")])

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream)

    assert [call.kind for call in stream.calls] == ["update", "finish"]
    assert result.outcome is ReplyOutcome.REPLIED
    assert stream.calls[-1].text == agent.text
    assert result.updates_sent == 0
    assert result.first_update_at == stream.calls[-1].ended


async def test_final_text_is_retried_until_it_lands(clock: VirtualClock) -> None:
    emitter = make_emitter(clock, min_interval=0.3)
    agent = FakeAgent(clock, words(20), gap=0.01)
    faults = [TransientError("502 bad gateway"), RateLimited("429", retry_after=2.0)]
    stream = RecordingStream(clock, finish_faults=faults)
    progress = ProgressLog()

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream, on_progress=progress)

    assert result.outcome is ReplyOutcome.REPLIED
    first, second, third = stream.of("finish")
    assert [c.error for c in (first, second, third)] == [*faults, None]
    assert all(call.text == agent.text for call in (first, second, third))
    assert first.ended is not None
    assert second.ended is not None
    assert second.started - first.ended >= 0.5 - EPS  # backoff
    assert third.started - second.ended >= 2.0 - EPS  # the platform's retry_after
    assert agent.text not in progress.texts
    assert result.delivered == agent.text
    assert not stream.of("fail")


async def test_final_text_that_never_lands_fails_the_reply_visibly(clock: VirtualClock) -> None:
    settings = EmitterSettings(final_retry_deadline=5.0)
    emitter = make_emitter(clock, final_retry_deadline=settings.final_retry_deadline)
    agent = FakeAgent(clock, words(20), gap=0.01)
    stream = RecordingStream(clock, finish_always=TransientError("503 service unavailable"))

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream)

    assert result.outcome is ReplyOutcome.FAILED
    assert result.error == "TransientError: 503 service unavailable"
    assert result.text == agent.text
    finishes = stream.of("finish")
    assert len(finishes) >= 3
    [fail] = stream.of("fail")
    assert fail.reason == settings.failure_text
    assert fail.text == agent.text  # the whole answer goes along: nothing dropped silently
    assert fail.started >= finishes[-1].started
    # No backoff sleep that would end past the deadline: the user hears about it in time.
    assert fail.started <= finishes[0].started + 5.0


async def test_a_retry_after_beyond_the_deadline_gives_up_at_once(clock: VirtualClock) -> None:
    emitter = make_emitter(clock, final_retry_deadline=5.0)
    agent = FakeAgent(clock, words(5))
    stream = RecordingStream(clock, finish_always=RateLimited("429", retry_after=60.0))

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream)

    assert result.outcome is ReplyOutcome.FAILED
    assert result.error == "RateLimited: 429"
    [finish] = stream.of("finish")
    [fail] = stream.of("fail")
    assert finish.ended is not None
    assert fail.started < finish.ended + 1.0  # no pointless wait for a retry that cannot happen
    assert fail.text == agent.text


async def test_final_text_refused_for_good_is_not_retried(clock: VirtualClock) -> None:
    emitter = make_emitter(clock)
    agent = FakeAgent(clock, words(5))
    stream = RecordingStream(clock, finish_always=PermanentError("card gone"))

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream)

    assert result.outcome is ReplyOutcome.FAILED
    assert result.error == "PermanentError: card gone"
    assert len(stream.of("finish")) == 1
    assert len(stream.of("fail")) == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TransientError("upstream 502"), "TransientError: upstream 502"),
        (ValueError("agent bug"), "ValueError: agent bug"),
    ],
)
async def test_agent_error_mid_stream_fails_with_the_partial_text(
    clock: VirtualClock, error: Exception, expected: str
) -> None:
    emitter = make_emitter(clock)
    agent = FakeAgent(clock, words(60), gap=0.01, error=error)
    stream = RecordingStream(clock)

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream)

    assert result.outcome is ReplyOutcome.FAILED
    assert result.error == expected
    assert result.text == agent.text
    assert not stream.of("finish")
    [fail] = stream.of("fail")
    assert fail.reason == EmitterSettings().failure_text
    assert fail.text == agent.text
    assert stream.of("update")  # it had been streaming
    assert stream.max_in_flight == 1


@pytest.mark.parametrize("deltas", [[], ["", ""], ["  ", "\n"]])
async def test_an_empty_answer_is_a_visible_failure(clock: VirtualClock, deltas: list[str]) -> None:
    emitter = make_emitter(clock)
    stream = RecordingStream(clock)

    result = await emitter.emit(PrefetchedAnswer(FakeAgent(clock, deltas).stream()), stream)

    assert result.outcome is ReplyOutcome.FAILED
    assert result.error == "empty answer"
    assert not stream.of("finish")
    [fail] = stream.of("fail")
    assert fail.reason == EmitterSettings().empty_text
    assert fail.reason.strip()


def other_tasks(*known: asyncio.Task[object] | None) -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task not in {asyncio.current_task(), *known}}


async def test_cancellation_ends_the_reply_and_leaves_no_task(clock: VirtualClock) -> None:
    driver = next(t for t in asyncio.all_tasks() if t.get_name() == "virtual-clock")
    emitter = make_emitter(clock)
    agent = FakeAgent(clock, words(500), gap=0.01)
    stream = RecordingStream(clock)
    progress = ProgressLog()
    reply = asyncio.create_task(
        emitter.emit(PrefetchedAnswer(agent.stream()), stream, on_progress=progress)
    )

    await progress.first.wait()
    await clock.sleep(0.5)
    reply.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reply

    assert reply.cancelled()
    [fail] = stream.of("fail")
    assert fail.reason == "(stopped)"
    assert fail.text  # the partial answer stays visible
    assert agent.text.startswith(fail.text)
    assert fail.text.startswith(progress.texts[-1])
    assert not stream.of("finish")
    assert agent.closed
    assert other_tasks(driver) == set()


async def test_cancellation_cleanup_is_bounded(clock: VirtualClock) -> None:
    emitter = make_emitter(clock, cleanup_timeout=0.05)  # real seconds: the hang is real
    agent = FakeAgent(clock, words(100), gap=0.01)
    stream = RecordingStream(clock, fail_hangs=True)
    progress = ProgressLog()
    reply = asyncio.create_task(
        emitter.emit(PrefetchedAnswer(agent.stream()), stream, on_progress=progress)
    )

    await progress.first.wait()
    reply.cancel()
    async with asyncio.timeout(2.0):
        with pytest.raises(asyncio.CancelledError):
            await reply
    assert len(stream.of("fail")) == 1


async def test_a_failing_progress_hook_still_ends_the_reply(clock: VirtualClock) -> None:
    emitter = make_emitter(clock)
    agent = FakeAgent(clock, words(100), gap=0.01)
    stream = RecordingStream(clock)

    async def broken(text: str) -> None:
        raise ChannelError("journal unavailable")

    with pytest.raises(ChannelError, match="journal"):
        await emitter.emit(PrefetchedAnswer(agent.stream()), stream, on_progress=broken)
    [fail] = stream.of("fail")
    assert fail.reason == EmitterSettings().failure_text
    assert agent.closed


def test_outcome_is_a_metric_label() -> None:
    assert [str(o) for o in ReplyOutcome] == ["replied", "failed", "cancelled"]
    result = EmitResult(ReplyOutcome.REPLIED, "hi", None, 0, None)
    assert f"{result.outcome}" == "replied"


async def test_the_end_of_the_answer_cuts_the_pause_before_an_update_short(
    clock: VirtualClock,
) -> None:
    # an update went out at 0.01; the next one would wait until 1.01, but the answer is complete
    # at 0.03: the final call goes out then, not a second later
    agent = FakeAgent(clock, ["a ", "b ", "c "], gap=0.01)
    stream = RecordingStream(clock, latency=0.001)
    emitter = make_emitter(clock, min_interval=1.0, final_min_interval=0.0)

    await emitter.emit(PrefetchedAnswer(agent.stream()), stream)

    assert [call.kind for call in stream.calls] == ["update", "finish"]
    assert stream.calls[1].started < 0.1


async def test_the_answer_is_read_by_one_task_from_before_the_reply_starts(
    clock: VirtualClock,
) -> None:
    driver = next(t for t in asyncio.all_tasks() if t.get_name() == "virtual-clock")
    agent = FakeAgent(clock, words(100), gap=0.01)
    answer = PrefetchedAnswer(agent.stream(), name="llm-reader")
    await clock.sleep(0.2)  # e.g. the card being created: the agent is read meanwhile
    assert len(agent.pulled_at) >= 15
    stream = RecordingStream(clock)
    progress = ProgressLog()
    emitter = make_emitter(clock, min_interval=0.3)
    reply = asyncio.create_task(emitter.emit(answer, stream, on_progress=progress))

    await progress.first.wait()
    assert progress.texts[0].startswith(agent.text[:20])  # the first update had it all so far
    # besides the reply, one task reads the agent; the others wait out the pause before an update
    pause = {"Event.wait", "VirtualClock.sleep"}
    tasks = other_tasks(driver, reply)
    readers = [t for t in tasks if getattr(t.get_coro(), "__qualname__", "") not in pause]
    assert [t.get_name() for t in readers] == ["llm-reader"]
    result = await reply
    assert result.outcome is ReplyOutcome.REPLIED
    assert other_tasks(driver) == set()


class SilentStream(RecordingStream):
    """Updates land but show nothing (messages are sent whole at the end), as after a fallback."""

    async def update(self, text_so_far: str) -> None:
        shown = self._delivered
        await super().update(text_so_far)
        self._delivered = shown


async def test_progress_is_reported_only_when_what_the_user_sees_changed(
    clock: VirtualClock,
) -> None:
    emitter = make_emitter(clock, min_interval=0.1)
    agent = FakeAgent(clock, words(100), gap=0.01)
    stream = SilentStream(clock)
    progress = ProgressLog()

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream, on_progress=progress)

    assert len(stream.of("update")) >= 3
    assert progress.texts == []  # nothing new reached the user until the end: nothing to record
    assert result.outcome is ReplyOutcome.REPLIED
    assert result.delivered == agent.text


async def test_the_complete_answer_is_handed_over_once_before_its_final_text_is_sent(
    clock: VirtualClock,
) -> None:
    emitter = make_emitter(clock, min_interval=0.3)
    agent = FakeAgent(clock, words(20), gap=0.01)
    stream = RecordingStream(clock, finish_faults=[TransientError("502 bad gateway")])
    handed: list[tuple[str, int]] = []  # the text, and how many finish calls had started

    async def on_final(text: str) -> None:
        handed.append((text, len(stream.of("finish"))))

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream, on_final=on_final)

    assert result.outcome is ReplyOutcome.REPLIED
    assert len(stream.of("finish")) == 2  # retried: still handed over once
    assert handed == [(agent.text, 0)]

    failing = FakeAgent(clock, words(5), gap=0.01, error=TransientError("upstream 502"))
    handed.clear()
    result = await emitter.emit(
        PrefetchedAnswer(failing.stream()), RecordingStream(clock), on_final=on_final
    )
    assert result.outcome is ReplyOutcome.FAILED
    assert handed == []  # an answer cut short is never final


class SlowProgress(ProgressLog):
    """A progress hook that takes `delay` (a write queued behind others) and records its calls."""

    def __init__(self, clock: VirtualClock, delay: float, *, error: Exception | None = None):
        super().__init__()
        self.clock = clock
        self.delay = delay
        self.error = error
        self.calls: list[tuple[float, float]] = []  # (started, ended)
        self.running = 0

    async def __call__(self, text: str) -> None:
        started = self.clock()
        self.running += 1
        assert self.running == 1, "two progress calls at once"
        try:
            await self.clock.sleep(self.delay)
        finally:
            self.running -= 1
        self.calls.append((started, self.clock()))
        if self.error is not None:
            raise self.error
        await super().__call__(text)


async def test_a_slow_progress_record_delays_neither_the_updates_nor_the_final_text(
    clock: VirtualClock,
) -> None:
    agent = FakeAgent(clock, words(100), gap=0.01)  # done after 1 s
    stream = RecordingStream(clock, latency=0.01)
    progress = SlowProgress(clock, delay=0.45)  # each record waits longer than an update's pause
    emitter = make_emitter(clock, min_interval=0.2, final_min_interval=0.1)

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream, on_progress=progress)

    returned = clock()
    assert result.outcome is ReplyOutcome.REPLIED
    updates = stream.of("update")
    assert len(updates) >= 4  # one every 0.2 s, not one per record
    assert_paced(updates, 0.2)
    assert all(b.started - a.started < 0.2 + 0.05 for a, b in itertools.pairwise(updates))
    [finish] = stream.of("finish")
    assert finish.started <= max(agent.pulled_at) + 0.1 + EPS  # no wait for a record
    # latest wins: a record at a time, updates that came and went meanwhile never recorded
    texts = [call.text for call in updates]
    assert 2 <= len(progress.texts) < len(texts)
    assert progress.texts == sorted(progress.texts, key=texts.index)
    assert progress.texts[-1] == texts[-1] or progress.texts[-1] == texts[-2]
    # every record has ended when emit returns: the owner's outcome write comes after them
    assert progress.calls[-1][1] <= returned


async def test_a_record_under_way_is_cancelled_with_the_reply(clock: VirtualClock) -> None:
    driver = next(t for t in asyncio.all_tasks() if t.get_name() == "virtual-clock")
    emitter = make_emitter(clock)
    agent = FakeAgent(clock, words(500), gap=0.01)
    stream = RecordingStream(clock)
    progress = SlowProgress(clock, delay=100.0)
    reply = asyncio.create_task(
        emitter.emit(PrefetchedAnswer(agent.stream()), stream, on_progress=progress)
    )

    await clock.sleep(1.0)
    assert progress.running == 1
    reply.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reply

    assert progress.running == 0
    assert progress.calls == [] and progress.texts == []
    assert [call.reason for call in stream.of("fail")] == ["(stopped)"]
    assert other_tasks(driver) == set()


async def test_a_record_that_fails_after_the_final_text_landed_is_logged_not_undone(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    agent = FakeAgent(clock, words(30), gap=0.01)  # done at 0.3 s, while the first record runs
    stream = RecordingStream(clock, latency=0.01)
    progress = SlowProgress(clock, delay=1.0, error=ChannelError("journal unavailable"))
    emitter = make_emitter(clock, min_interval=0.2)

    result = await emitter.emit(PrefetchedAnswer(agent.stream()), stream, on_progress=progress)

    assert result.outcome is ReplyOutcome.REPLIED
    assert stream.of("finish")[0].landed
    assert not stream.of("fail")  # the user keeps the answer
    assert len(progress.calls) == 1
    assert "recording the reply's progress failed" in caplog.text


@pytest.mark.parametrize(("store", "expected"), [(0.05, 0.1), (0.3, 0.3)])
async def test_the_final_call_follows_the_stored_answer_and_the_short_pause_whichever_is_later(
    clock: VirtualClock, store: float, expected: float
) -> None:
    # the answer ends 0.02 s after an update went out; storing it takes `store` seconds: the
    # final call never starts before it is stored, and the 0.1 s pause after the update passes
    # meanwhile (the final call waits for the longer of the two, not for both)
    agent = FakeAgent(clock, ["a ", "b "], gap=0.01)
    stream = RecordingStream(clock, latency=0.001)
    emitter = make_emitter(clock, min_interval=0.5, final_min_interval=0.1)
    stored: list[float] = []

    async def on_final(text: str) -> None:
        assert not stream.of("finish")
        await clock.sleep(store)
        stored.append(clock())

    await emitter.emit(PrefetchedAnswer(agent.stream()), stream, on_final=on_final)

    update, finish = stream.calls
    assert (update.kind, finish.kind) == ("update", "finish")
    assert finish.started >= stored[0]
    assert finish.started - update.started == pytest.approx(expected, abs=0.02)
