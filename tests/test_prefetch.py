"""Prefetched: reading starts at once, items and errors come out in order, aclose stops it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from channels.prefetch import Prefetched


async def test_reading_starts_before_anyone_consumes() -> None:
    started = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        started.set()
        yield "a"
        yield "b"

    items = Prefetched(source())
    await asyncio.wait_for(started.wait(), 1)  # nothing has iterated yet
    assert [item async for item in items] == ["a", "b"]
    await items.aclose()


async def test_an_error_comes_after_the_items_before_it() -> None:
    async def source() -> AsyncIterator[str]:
        yield "partial"
        raise ValueError("the LLM broke")

    items = Prefetched(source())
    assert await anext(items) == "partial"
    with pytest.raises(ValueError, match="the LLM broke"):
        await anext(items)
    with pytest.raises(StopAsyncIteration):
        await anext(items)
    await items.aclose()


async def test_aclose_stops_a_source_nobody_finished() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        try:
            yield "first"
            await asyncio.sleep(30)
            yield "never"
        finally:
            closed.set()

    items = Prefetched(source())
    assert await anext(items) == "first"
    await items.aclose()
    assert closed.is_set()
    with pytest.raises(StopAsyncIteration):
        await anext(items)
    await items.aclose()  # idempotent
