"""The Stream connection under supervision: handshake, reconnects, watchdog, auth failure, stop.

Also proves how channels/dingtalk/connection.py deals with the defects of dingtalk-stream 0.24.3.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from channels.dingtalk.emulator import DingTalkEmulator, EmulatorThread
from channels.model import ChannelState
from tests.dingtalk_support import DINGTALK_CLIENT_ID, dingtalk_emulator
from tests.e2e_support import start_stack, wait_until

__all__ = ["dingtalk_emulator"]


async def live(emulator: EmulatorThread) -> list[str]:
    return [c.connection_id for c in await emulator.live_connections(DINGTALK_CLIENT_ID)]


async def test_connected_only_after_the_gateway_handshake(
    tmp_path: Path, dingtalk_emulator: EmulatorThread
) -> None:
    # the open-connection call is slow: the channel must say "connecting" until the socket is up
    await dingtalk_emulator.add_fault("/v1.0/gateway/connections/open", None, latency=0.6)
    stack = await start_stack(tmp_path, dingtalk_emulator, None)
    try:
        await wait_until(lambda: stack.state() is ChannelState.CONNECTING, 2)
        assert await live(dingtalk_emulator) == []
        await stack.connected()
        assert len(await live(dingtalk_emulator)) == 1
        assert stack.daemon.manager is not None
        assert stack.daemon.manager.status("dt").connected_at is not None
    finally:
        await stack.stop()


async def test_reconnects_after_a_dropped_socket_and_a_system_disconnect(
    tmp_path: Path, dingtalk_emulator: EmulatorThread
) -> None:
    stack = await start_stack(tmp_path, dingtalk_emulator, None)
    try:
        await stack.connected()
        first = await live(dingtalk_emulator)
        await dingtalk_emulator.drop(DINGTALK_CLIENT_ID, mode="abort")
        await wait_until(lambda: stack.supervisor.status().reconnects == 1)
        await stack.connected()
        second = await live(dingtalk_emulator)
        assert len(second) == 1 and second != first

        await dingtalk_emulator.system_disconnect(DINGTALK_CLIENT_ID)
        await wait_until(lambda: stack.supervisor.status().reconnects == 2)
        await stack.connected()
        third = await live(dingtalk_emulator)
        assert len(third) == 1 and third != second
        # the disconnect frame was acked before the client closed, as the protocol asks
        acks = await dingtalk_emulator.call(lambda e: [a for a in e.acks() if a.frame.get("data")])
        assert acks
        # and the new session still answers
        sent = await stack.say("still there?")
        await stack.wait_bot_items(sent.conversation_id, lambda items: bool(items))
    finally:
        await stack.stop()


async def test_a_silent_socket_is_replaced_by_the_watchdog(
    tmp_path: Path, dingtalk_emulator: EmulatorThread
) -> None:
    stack = await start_stack(tmp_path, dingtalk_emulator, None, channel={"watchdog_seconds": 1})
    try:
        await stack.connected()
        zombie = await live(dingtalk_emulator)
        await dingtalk_emulator.silence(DINGTALK_CLIENT_ID)
        await wait_until(lambda: stack.supervisor.status().reconnects == 1, 5)
        await stack.connected()
        fresh = await live(dingtalk_emulator)
        assert fresh and set(fresh).isdisjoint(zombie)
        status = stack.supervisor.status()
        assert "no frame from the gateway" in (status.last_error or "")
    finally:
        await stack.stop()


async def test_rejected_credentials_end_in_failed_without_a_retry_storm(
    tmp_path: Path, dingtalk_emulator: EmulatorThread
) -> None:
    stack = await start_stack(
        tmp_path, dingtalk_emulator, None, channel={"client_secret": "wrong-secret"}
    )
    try:
        await wait_until(lambda: stack.state() is ChannelState.FAILED)
        await asyncio.sleep(0.5)  # long enough for several attempts under the test backoff
        opens = await dingtalk_emulator.calls("/v1.0/gateway/connections/open")
        assert len(opens) == 1
        assert stack.daemon.manager is not None
        error = stack.daemon.manager.status("dt").last_error or ""
        assert error.startswith("AuthError")
        assert "wrong-secret" not in error
    finally:
        await stack.stop()


async def test_transient_open_failures_are_retried(
    tmp_path: Path, dingtalk_emulator: EmulatorThread
) -> None:
    await dingtalk_emulator.add_fault("/v1.0/gateway/connections/open", 503, times=3)
    stack = await start_stack(tmp_path, dingtalk_emulator, None)
    try:
        await stack.connected()
        assert len(await dingtalk_emulator.calls("/v1.0/gateway/connections/open")) == 4
    finally:
        await stack.stop()


async def test_stopping_the_daemon_is_quick_and_leaves_nothing_behind(
    tmp_path: Path, dingtalk_emulator: EmulatorThread
) -> None:
    before = asyncio.all_tasks()
    stack = await start_stack(tmp_path, dingtalk_emulator, None, agent={"delay": 0.2})
    await stack.connected()
    sent = await stack.say("a long answer is being written " * 5)
    await stack.wait_bot_items(sent.conversation_id, lambda items: bool(items))  # mid-answer
    loop = asyncio.get_running_loop()
    began = loop.time()
    await stack.stop()
    assert loop.time() - began < 2.0
    await asyncio.sleep(0)
    leftovers = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert leftovers == [], leftovers
    assert await dingtalk_emulator.wait_for(lambda e: not e.live_connections(DINGTALK_CLIENT_ID))


async def test_open_connection_does_not_block_the_event_loop(
    tmp_path: Path, dingtalk_emulator: EmulatorThread
) -> None:
    """0.24.3 blocks in requests.post here; the autouse guard fails the test on any stall."""
    await dingtalk_emulator.add_fault("/v1.0/gateway/connections/open", None, latency=0.8)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    stack = await start_stack(tmp_path, dingtalk_emulator, None)
    try:
        await stack.connected()
        assert ticks >= 40  # the loop kept running during the 0.8 s open call
    finally:
        task.cancel()
        await stack.stop()


async def test_one_cancellation_ends_a_session(
    tmp_path: Path, dingtalk_emulator: EmulatorThread
) -> None:
    """0.24.3's start() swallows the first CancelledError and sleeps 10 s; our run() does not."""
    stack = await start_stack(tmp_path, dingtalk_emulator, None)
    try:
        await stack.connected()
        provider = stack.supervisor.provider
        reader = provider._reader
        assert reader is not None
        reader.cancel()
        async with asyncio.timeout(1):
            while not reader.done():
                await asyncio.sleep(0.01)
        assert reader.cancelled()
        # the supervisor sees a session that ended, not its own cancellation, and reconnects
        await wait_until(lambda: stack.supervisor.status().reconnects == 1)
        await stack.connected()
    finally:
        await stack.stop()


def test_websockets_exceptions_is_loaded_before_the_sdk_can_need_it() -> None:
    """The lazy-attribute hazard of 0.24.3 (docs/platforms/dingtalk.md §5.4), shown and defused."""
    bare = subprocess.run(
        [sys.executable, "-c", "import websockets; print(hasattr(websockets, 'exceptions'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    ours = subprocess.run(
        [
            sys.executable,
            "-c",
            "import channels.dingtalk.connection, websockets; "
            "print(hasattr(websockets, 'exceptions'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert bare.stdout.strip() == "False"  # the hazard is real with the pinned websockets
    assert ours.stdout.strip() == "True"


async def test_garbage_frames_are_dropped_and_the_session_survives(
    tmp_path: Path, dingtalk_emulator: EmulatorThread
) -> None:
    stack = await start_stack(tmp_path, dingtalk_emulator, None)
    try:
        await stack.connected()
        topic = "/v1.0/im/bot/messages/get"
        garbage: list[dict[str, object]] = [
            {"type": "CALLBACK", "headers": "not a dict", "data": "{}"},
            {"type": "CALLBACK", "headers": {"topic": topic, "messageId": "g1"},
             "data": "not json"},
            {"type": "CALLBACK", "headers": {"topic": topic, "messageId": "g2"},
             "data": "{\"msgtype\": \"text\"}"},
            {"type": "SYSTEM", "headers": {"topic": "ping", "messageId": "g3"}, "data": "[1, 2]"},
            {"type": "WHATEVER"},
        ]  # fmt: skip

        async def push_garbage(e: DingTalkEmulator) -> None:
            for frame in garbage:
                await e.push_frame(DINGTALK_CLIENT_ID, frame)

        await dingtalk_emulator.call(push_garbage)
        sent = await stack.say("still fine?")
        items = await stack.wait_bot_items(sent.conversation_id, lambda i: bool(i))
        assert items
        assert stack.supervisor.status().reconnects == 0
        assert stack.daemon.metrics is not None
        text = stack.daemon.metrics.render()[0].decode()
        assert 'channeld_messages_invalid_total{channel="dt",platform="dingtalk"} 1.0' in text
    finally:
        await stack.stop()
