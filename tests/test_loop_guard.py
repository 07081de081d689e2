"""The loop-block guard itself must catch a blocked loop, or it proves nothing."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.conftest import LoopBlockGuard


@pytest.mark.allow_loop_block
async def test_guard_records_a_blocked_loop() -> None:
    guard = LoopBlockGuard(asyncio.get_running_loop(), 0.1)
    guard.start()
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # the very thing the guard exists to catch
    await asyncio.sleep(0.05)
    guard.stop()
    assert guard.stalls
    assert max(guard.stalls) >= 0.1


async def test_guard_is_quiet_on_a_healthy_loop() -> None:
    guard = LoopBlockGuard(asyncio.get_running_loop(), 0.1)
    guard.start()
    for _ in range(10):
        await asyncio.sleep(0.02)
    guard.stop()
    assert guard.stalls == []


@pytest.mark.allow_loop_block
async def test_guard_fixture_is_active(loop_block_guard: LoopBlockGuard | None) -> None:
    assert loop_block_guard is not None
    time.sleep(0.8)
    await asyncio.sleep(0.05)
    assert loop_block_guard.stalls


async def test_nothing_leaves_loopback() -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await http.get("https://api.dingtalk.com/", timeout=aiohttp.ClientTimeout(total=5))
    assert "tests must stay on loopback" in str(refused.value.os_error)
