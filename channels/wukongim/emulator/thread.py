"""Runs a `WuKongIMEmulator` on its own event loop in a background thread.

A test's loop then runs the daemon (or a webhook receiver) alone, and the emulator's pushes reach
it over real loopback HTTP. `channels.emulator.thread` holds the generic machinery and the
proxies every platform shares; this module adds WuKongIM's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from channels.emulator import thread
from channels.wukongim.emulator.messaging import EventRecord
from channels.wukongim.emulator.server import DEFAULT_BOTS, WuKongIMEmulator
from channels.wukongim.emulator.state import BotSpec
from channels.wukongim.emulator.webhook import PushAttempt


class WuKongIMEmulatorThread(thread.EmulatorThread[WuKongIMEmulator]):
    """A started WuKongIM emulator on a private loop, with awaitable thread-safe access."""

    def __init__(self, bots: Iterable[BotSpec] = DEFAULT_BOTS, **options: Any) -> None:
        super().__init__(WuKongIMEmulator, bots, name="wukongim-emulator", **options)

    async def pushes(self, message_id: str | None = None) -> list[PushAttempt]:
        """See `WuKongIMEmulator.pushes`."""
        return await self.call(lambda e: e.pushes(message_id))

    async def events(self, client_msg_no: str | None = None) -> list[EventRecord]:
        """See `WuKongIMEmulator.events`."""
        return await self.call(lambda e: e.events(client_msg_no))

    async def redeliver(self, message_ids: Iterable[str | int]) -> list[str]:
        """See `WuKongIMEmulator.redeliver`."""
        ids = list(message_ids)
        return await self.call(lambda e: e.redeliver(ids))

    async def set_webhook(self, url: str) -> None:
        """See `WuKongIMEmulator.set_webhook`."""
        await self.call(lambda e: e.set_webhook(url))

    async def pause_webhook(self, on: bool = True) -> None:
        """See `WuKongIMEmulator.pause_webhook`."""
        await self.call(lambda e: e.pause_webhook(on))

    async def flush_webhook(self) -> None:
        """See `WuKongIMEmulator.flush_webhook`."""
        await self.call(lambda e: e.flush_webhook())
