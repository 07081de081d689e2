"""systemd notify protocol: READY, STATUS, STOPPING and a watchdog pinged from the event loop.

Everything here is a silent no-op when `NOTIFY_SOCKET` is unset, so the daemon runs the same way
under systemd, in a terminal and in tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _socket_address(value: str) -> str | bytes | None:
    """The address `NOTIFY_SOCKET` names: a path, or `@name` for the abstract namespace."""
    if value.startswith("@"):
        # Linux abstract namespace: the leading NUL replaces the '@'.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock (`vsock:...`) and relative paths are not used for a service


class Notifier:
    """Sends sd_notify datagrams; never blocks and never raises."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw) if raw else None
        if raw and self._address is None:
            log.warning("ignoring unsupported NOTIFY_SOCKET %r", raw)
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given."""
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Sends `KEY=value` fields as one datagram; True when it was sent."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # The loop must never wait on systemd: a full queue drops the datagram instead.
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            # Logged once: a watchdog ping every few seconds must not flood the journal.
            if not self._failed:
                self._failed = True
                log.warning("sd_notify to %r failed: %s", self._address, exc)
            return False
        self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Tells systemd start-up is complete (READY=1), optionally with a status line."""
        fields = ["READY=1"]
        if status is not None:
            fields.append(_status_field(status))
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        """Sets the free-form status line `systemctl status` shows."""
        return self.notify(_status_field(text))

    def stopping(self, status: str | None = None) -> bool:
        """Tells systemd shutdown has begun (STOPPING=1)."""
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append(_status_field(status))
        return self.notify(*fields)

    def watchdog(self) -> bool:
        """Pings the service watchdog (WATCHDOG=1)."""
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Closes the datagram socket; a later call opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_field(text: str) -> str:
    """One STATUS= field: a newline would start a new, unintended field."""
    return "STATUS=" + " ".join(text.splitlines())


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of `WATCHDOG_USEC`), or None when no watchdog is for us."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    # The variables are inherited by children; only the process systemd named may ping.
    if pid and pid != str(os.getpid()):
        return None
    # sd_watchdog_enabled(3) recommends pinging at half the period to absorb scheduling jitter.
    return usec / 2_000_000


class WatchdogPinger:
    """Pings the watchdog from the event loop, so a stalled loop stops the pings."""

    def __init__(self, notifier: Notifier, interval: float | None) -> None:
        self._notifier = notifier
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the ping task is alive."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Starts pinging; does nothing without a notify socket or a watchdog interval."""
        if self._interval is None or not self._notifier.enabled or self.running:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(self._interval), name="sd-watchdog"
        )

    async def stop(self) -> None:
        """Stops pinging and waits for the task to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # wait() rather than awaiting the task: a cancellation of stop() itself must propagate.
        await asyncio.wait({task})

    async def _run(self, interval: float) -> None:
        """Pings now and every interval; on the loop, not a thread, so a stalled loop goes quiet."""
        while True:
            self._notifier.watchdog()
            await asyncio.sleep(interval)
