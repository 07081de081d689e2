"""The sd_notify client speaks the protocol to a real datagram socket, as systemd listens."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.sdnotify import Notifier, WatchdogPinger, watchdog_interval

RECV_TIMEOUT = 5.0


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound, non-blocking datagram socket standing in for systemd's notify socket."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


async def receive(sock: socket.socket) -> str:
    """The next datagram systemd would read."""
    data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), RECV_TIMEOUT)
    return data.decode()


async def test_ready_status_stopping_arrive(notify_socket: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.enabled

    assert notifier.ready()
    assert await receive(notify_socket) == "READY=1"
    assert notifier.status("channels: 2 running, 1 failed")
    assert await receive(notify_socket) == "STATUS=channels: 2 running, 1 failed"
    assert notifier.watchdog()
    assert await receive(notify_socket) == "WATCHDOG=1"
    assert notifier.stopping("draining 3 replies")
    assert await receive(notify_socket) == "STOPPING=1\nSTATUS=draining 3 replies"
    notifier.close()


async def test_status_keeps_to_one_field(notify_socket: socket.socket) -> None:
    notifier = Notifier()
    notifier.ready("degraded\nREADY=0")
    assert await receive(notify_socket) == "READY=1\nSTATUS=degraded READY=0"
    notifier.close()


async def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"channeld-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(b"\0" + name.encode())
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        notifier = Notifier()
        assert notifier.ready()
        assert await receive(sock) == "READY=1"
        notifier.close()


def test_silent_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.stopping()


def test_send_failure_is_logged_once_and_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING, logger="daemon.sdnotify"):
        assert not notifier.watchdog()
        assert not notifier.watchdog()
        assert not notifier.stopping()
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1
    notifier.close()


def test_watchdog_interval_is_half_the_period() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_watchdog_for_another_process_is_ignored() -> None:
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert watchdog_interval(env) is None


async def test_pinger_sends_watchdog_and_stops_cleanly(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    interval = watchdog_interval()
    assert interval == pytest.approx(0.1)
    notifier = Notifier()
    pinger = WatchdogPinger(notifier, interval)
    pinger.start()
    assert pinger.running
    for _ in range(3):  # the first ping at once, then repeated ones on the interval
        assert await receive(notify_socket) == "WATCHDOG=1"
    await pinger.stop()
    assert not pinger.running
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "sd-watchdog"]
    await pinger.stop()  # idempotent
    notifier.close()


async def test_pinger_idle_without_watchdog(notify_socket: socket.socket) -> None:
    pinger = WatchdogPinger(Notifier(), watchdog_interval({}))
    pinger.start()
    assert not pinger.running
    await pinger.stop()


async def test_pinger_idle_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    pinger = WatchdogPinger(Notifier(), 0.1)
    pinger.start()
    assert not pinger.running
    await pinger.stop()
