"""Runs a `ZimEmulator` on its own event loop in a background thread.

A test's loop then runs the daemon (or a callback receiver) alone, and the emulator's callbacks
reach it over real loopback HTTP. `channels.emulator.thread` holds the generic machinery and the
proxies every platform shares; this module adds ZIM's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from channels.emulator import thread
from channels.zim.emulator.callbacks import CallbackAttempt
from channels.zim.emulator.server import DEFAULT_ROBOTS, ZimEmulator
from channels.zim.emulator.state import PeerMessage, Refusal, Robot, RobotSpec


class ZimEmulatorThread(thread.EmulatorThread[ZimEmulator]):
    """A started ZIM emulator on a private loop, with awaitable thread-safe access."""

    def __init__(self, robots: Iterable[RobotSpec] = DEFAULT_ROBOTS, **options: Any) -> None:
        super().__init__(ZimEmulator, robots, name="zim-emulator", **options)

    async def callback_attempts(
        self, msg_id: str | None = None, event: str | None = None
    ) -> list[CallbackAttempt]:
        """See `ZimEmulator.callback_attempts`."""
        return await self.call(lambda e: e.callback_attempts(msg_id, event))

    async def refusals(self) -> list[Refusal]:
        """See `ZimEmulator.refusals`."""
        return await self.call(lambda e: e.refusals())

    async def robots(self) -> list[Robot]:
        """See `ZimEmulator.robots`."""
        return await self.call(lambda e: e.robots())

    async def message(self, msg_id: str) -> PeerMessage | None:
        """See `ZimEmulator.message`."""
        return await self.call(lambda e: e.message(msg_id))

    async def set_callback(self, url: str) -> None:
        """See `ZimEmulator.set_callback`."""
        await self.call(lambda e: e.set_callback(url))
