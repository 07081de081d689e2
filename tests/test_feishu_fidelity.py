"""The official lark-oapi 1.7.5 `ws.Client` against the Feishu emulator.

lark-oapi pins websockets<16, so it runs from its own venv (`make .venv-lark/.installed-stamp`)
in a subprocess (tests/lark_driver.py) whose interpreter is env CHANNELD_LARK_PYTHON. Without it
these tests skip, unless CHANNELD_REQUIRE_LARK=1 (CI), where they fail instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from channels.feishu.emulator import FeishuEmulator, FeishuEmulatorThread
from tests import feishu_support
from tests.feishu_support import FEISHU_APP_ID, FEISHU_APP_SECRET

feishu_emulator = feishu_support.feishu_emulator  # the shared fixture, by name

DRIVER = Path(__file__).with_name("lark_driver.py")
PREFIX = "@@lark-driver "


def lark_python() -> str:
    """The lark venv's interpreter, or skip (fail under CHANNELD_REQUIRE_LARK=1)."""
    path = os.environ.get("CHANNELD_LARK_PYTHON", "")
    reason = ""
    if not path:
        reason = "CHANNELD_LARK_PYTHON is not set (make .venv-lark/.installed-stamp; make unit)"
    elif not Path(path).is_file():
        reason = f"CHANNELD_LARK_PYTHON={path} does not exist"
    if reason:
        if os.environ.get("CHANNELD_REQUIRE_LARK") == "1":
            pytest.fail(f"lark-oapi oracle required: {reason}")
        pytest.skip(reason)
    return path


class Driver:
    """The lark driver subprocess and the records it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[str] = []

    async def next_record(self, timeout: float = 15.0) -> dict[str, Any]:
        """The next JSON record the driver printed (SDK log lines are kept in `log`)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise EOFError("driver exited:\n" + "".join(self.log[-40:]))
                line = raw.decode("utf-8", "replace")
                if line.startswith(PREFIX):
                    record: dict[str, Any] = json.loads(line[len(PREFIX) :])
                    return record
                self.log.append(line)

    async def stop(self) -> None:
        """Kills the process (the SDK has no stop) and reaps it."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


@pytest.fixture
async def start_driver() -> AsyncIterator[Any]:
    """A factory starting the driver against an emulator URL; every driver is killed after."""
    python = lark_python()
    drivers: list[Driver] = []

    async def start(url: str, *extra: str) -> Driver:
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        proc = await asyncio.create_subprocess_exec(
            python,
            str(DRIVER),
            "--domain",
            url,
            "--app-id",
            FEISHU_APP_ID,
            "--app-secret",
            FEISHU_APP_SECRET,
            *extra,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        driver = Driver(proc)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        await driver.stop()


async def test_sdk_gets_a_split_event_and_acks_it(
    feishu_emulator: FeishuEmulatorThread, start_driver: Any
) -> None:
    driver = await start_driver(feishu_emulator.url)
    live = await feishu_emulator.wait_for(lambda e: e.live_connections(FEISHU_APP_ID), 20)
    discovery = (await feishu_emulator.discoveries(FEISHU_APP_ID))[0]
    assert (discovery.status, discovery.code, discovery.body["AppSecret"]) == (200, 0, "***")
    sent = await feishu_emulator.send_user_message(
        FEISHU_APP_ID, text="你好 split", chat_type="group", parts=3
    )
    assert sent.delivered
    frames_sent = await feishu_emulator.deliveries(sent.message_id)
    assert len(frames_sent[0].seq_ids) == 3
    record = await driver.next_record()
    assert record["kind"] == "event"
    assert (record["event_id"], record["message_id"]) == (sent.event_id, sent.message_id)
    assert (record["event_type"], record["app_id"]) == ("im.message.receive_v1", FEISHU_APP_ID)
    assert (record["chat_id"], record["chat_type"]) == (sent.chat_id, "group")
    assert json.loads(record["content"]) == {"text": "@_user_1 你好 split"}
    assert record["mentions"] == ["@_user_1"]
    assert record["sender_open_id"] == "ou_user1"
    acks = await feishu_emulator.wait_for(lambda e: e.acks(sent.frame_message_id))
    assert len(acks) == 1  # only the part that completes the event is answered
    ack = acks[0]
    assert (ack.code, ack.matches, ack.connection_id) == (200, True, live[0].connection_id)
    assert ack.biz_rt is not None
    assert ack.payload == {"code": 200}
    # The SDK's ping loop runs at the PingInterval the discovery answer handed out.
    await feishu_emulator.wait_for(lambda e: e.live_connections()[0].pongs >= 2, 10)


async def test_sdk_handler_failure_acks_500_and_the_event_comes_back(
    feishu_emulator: FeishuEmulatorThread, start_driver: Any
) -> None:
    driver = await start_driver(feishu_emulator.url, "--fail-first")
    await feishu_emulator.wait_for(lambda e: e.live_connections(FEISHU_APP_ID), 20)
    sent = await feishu_emulator.send_user_message(FEISHU_APP_ID, text="again?", parts=2)
    first = await driver.next_record()
    second = await driver.next_record()
    assert first["message_id"] == second["message_id"] == sent.message_id
    assert first["event_id"] == sent.event_id
    assert second["event_id"] != sent.event_id  # a redelivery carries a new event id
    failed = await feishu_emulator.wait_for(lambda e: e.acks(sent.frame_message_id))
    assert [(a.code, a.biz_rt) for a in failed] == [(500, None)]
    deliveries = await feishu_emulator.deliveries(sent.message_id)
    assert len(deliveries) == 2
    acks = await feishu_emulator.wait_for(lambda e: e.acks(deliveries[1].frame_message_id))
    assert acks[0].code == 200


@pytest.mark.parametrize(("status", "autherrcode", "code"), [(514, 1000040350, 514), (403, 0, 403)])
async def test_sdk_gives_up_on_a_fatal_handshake_rejection(
    feishu_emulator: FeishuEmulatorThread,
    start_driver: Any,
    status: int,
    autherrcode: int,
    code: int,
) -> None:
    await feishu_emulator.reject_handshakes(status, autherrcode)
    driver = await start_driver(feishu_emulator.url)
    record = await driver.next_record()
    assert record == {"kind": "error", "type": "ClientException", "code": code}
    assert await asyncio.wait_for(driver.proc.wait(), 10) == 3
    assert len(await feishu_emulator.discoveries()) == 1  # no reconnect attempt
    assert await feishu_emulator.connections() == []


async def test_sdk_reconnects_through_a_busy_discovery_after_a_gateway_close(
    feishu_emulator: FeishuEmulatorThread, start_driver: Any
) -> None:
    await start_driver(feishu_emulator.url)
    first = (await feishu_emulator.wait_for(lambda e: e.live_connections(), 20))[0]
    # The retry cadence comes from the ClientConfig of the first discovery (interval 1 s, no
    # jitter); before any discovery succeeded the SDK would wait its defaults (up to 30 s + 120 s).
    await feishu_emulator.add_fault("/callback/ws/endpoint", code=1, times=1)
    assert await feishu_emulator.drop(FEISHU_APP_ID, mode="close", code=1000) == 1

    def moved(e: FeishuEmulator) -> Any:
        live = e.live_connections()
        return live if live and live[0].connection_id != first.connection_id else None

    live = await feishu_emulator.wait_for(moved, 20)
    assert len(live) == 1
    assert [c.code for c in await feishu_emulator.discoveries()] == [0, 1, 0]
    sent = await feishu_emulator.send_user_message(FEISHU_APP_ID, text="back")
    acks = await feishu_emulator.wait_for(lambda e: e.acks(sent.frame_message_id))
    assert acks[0].code == 200


async def test_sdk_gives_up_on_bad_credentials(start_driver: Any) -> None:
    async with FeishuEmulatorThread([(FEISHU_APP_ID, "another-secret")]) as emulator:
        driver = await start_driver(emulator.url)
        record = await driver.next_record()
        assert record == {"kind": "error", "type": "ClientException", "code": 10014}
        assert len(await emulator.discoveries()) == 1
