"""The SQLite write queue: one writer at a time, urgent waiters first, cancellation-safe."""

from __future__ import annotations

import asyncio

import pytest

from storage.writers import WriteQueue


async def _writer(queue: WriteQueue, name: str, log: list[str], urgent: bool = False) -> None:
    async with queue.turn(urgent=urgent):
        log.append(f"{name} in")
        await asyncio.sleep(0)
        log.append(f"{name} out")


async def test_one_writer_at_a_time_first_come_first_served() -> None:
    queue = WriteQueue()
    log: list[str] = []
    await asyncio.gather(*(_writer(queue, name, log) for name in "abc"))
    assert log == ["a in", "a out", "b in", "b out", "c in", "c out"]


async def test_urgent_waiters_go_first_but_not_before_the_writer_in_progress() -> None:
    queue = WriteQueue()
    log: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with queue.turn():
            log.append("holder in")
            await release.wait()
            log.append("holder out")

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiting = [
        asyncio.create_task(_writer(queue, "progress-1", log)),
        asyncio.create_task(_writer(queue, "progress-2", log)),
        asyncio.create_task(_writer(queue, "journal-1", log, urgent=True)),
        asyncio.create_task(_writer(queue, "journal-2", log, urgent=True)),
    ]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(held, *waiting)
    entered = [line.removesuffix(" in") for line in log if line.endswith(" in")]
    assert entered == ["holder", "journal-1", "journal-2", "progress-1", "progress-2"]


async def test_a_cancelled_waiter_leaves_the_queue_working() -> None:
    queue = WriteQueue()
    log: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with queue.turn():
            await release.wait()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    doomed = asyncio.create_task(_writer(queue, "doomed", log, urgent=True))
    after = asyncio.create_task(_writer(queue, "after", log))
    await asyncio.sleep(0)
    doomed.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await asyncio.gather(held, after)
    assert log == ["after in", "after out"]
    async with asyncio.timeout(1):
        await _writer(queue, "later", log)  # the turn was handed on, not lost


async def test_a_waiter_cancelled_just_as_it_is_handed_the_turn_passes_it_on() -> None:
    queue = WriteQueue()
    log: list[str] = []
    async with queue.turn():
        doomed = asyncio.create_task(_writer(queue, "doomed", log))
        after = asyncio.create_task(_writer(queue, "after", log))
        await asyncio.sleep(0)  # both wait now
    # leaving the turn handed it to `doomed`, which has not run since: cancel it right here
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    async with asyncio.timeout(1):
        await after
    assert log == ["after in", "after out"]
