"""PrefetchedAnswer: reading starts at once, text and errors come out in order, aclose stops it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from channels.prefetch import PrefetchedAnswer


async def test_reading_starts_before_anyone_consumes() -> None:
    finished = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        yield "a"
        yield ""  # an empty delta changes nothing
        yield "b"
        finished.set()

    answer = PrefetchedAnswer(source())
    await asyncio.wait_for(finished.wait(), 1)  # read to the end while nobody asked
    assert answer.changed.is_set()
    assert answer.text == "ab"
    assert await answer.result() == "ab"
    assert answer.done
    await answer.aclose()


async def test_the_text_grows_and_changed_marks_each_step() -> None:
    step = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        yield "Hello"
        await step.wait()
        yield ", world"

    answer = PrefetchedAnswer(source())
    await answer.changed.wait()
    assert answer.text == "Hello"
    assert not answer.done
    answer.changed.clear()  # the consumer took it
    step.set()
    await answer.changed.wait()
    assert await answer.result() == "Hello, world"
    await answer.aclose()


async def test_an_error_comes_after_the_text_before_it() -> None:
    async def source() -> AsyncIterator[str]:
        yield "partial"
        raise ValueError("the LLM broke")

    answer = PrefetchedAnswer(source())
    with pytest.raises(ValueError, match="the LLM broke"):
        await answer.result()
    assert answer.text == "partial"
    assert answer.done
    await answer.aclose()


async def test_aclose_stops_a_source_nobody_finished() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        try:
            yield "first"
            await asyncio.sleep(30)
            yield "never"
        finally:
            closed.set()

    answer = PrefetchedAnswer(source(), name="llm-test")
    await answer.changed.wait()
    await answer.aclose()
    assert closed.is_set()
    assert answer.done
    assert answer.text == "first"
    await answer.aclose()  # idempotent
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "llm-test"]


async def test_aclose_gives_up_on_a_source_that_ignores_cancellation() -> None:
    release = asyncio.Event()

    async def stubborn() -> AsyncIterator[str]:
        yield "first"
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallowed: a badly behaved client library

    answer = PrefetchedAnswer(stubborn())
    await answer.changed.wait()
    async with asyncio.timeout(2):
        await answer.aclose(within=0.05)
    assert not answer.done  # abandoned, and said so in the log
    release.set()
    await answer.aclose()
    assert answer.done
