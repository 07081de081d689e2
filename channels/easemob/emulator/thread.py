"""Runs an `EasemobEmulator` on its own event loop in a background thread.

A test's loop then runs the daemon (or a callback receiver) alone, and the emulator's callbacks
reach it over real loopback HTTP. `channels.emulator.thread` holds the generic machinery and the
proxies every platform shares; this module adds Easemob's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from channels.easemob.emulator.callbacks import PostAttempt, PresendCall
from channels.easemob.emulator.server import DEFAULT_BOTS, EasemobEmulator
from channels.easemob.emulator.state import BotSpec, TokenRequest
from channels.emulator import thread


class EasemobEmulatorThread(thread.EmulatorThread[EasemobEmulator]):
    """A started Easemob emulator on a private loop, with awaitable thread-safe access."""

    def __init__(self, bots: Iterable[BotSpec] = DEFAULT_BOTS, **options: Any) -> None:
        super().__init__(EasemobEmulator, bots, name="easemob-emulator", **options)

    async def presends(self, msg_id: str | None = None) -> list[PresendCall]:
        """See `EasemobEmulator.presends`."""
        return await self.call(lambda e: e.presends(msg_id))

    async def postsends(self, msg_id: str | None = None) -> list[PostAttempt]:
        """See `EasemobEmulator.postsends`."""
        return await self.call(lambda e: e.postsends(msg_id))

    async def token_requests(self) -> list[TokenRequest]:
        """See `EasemobEmulator.token_requests`."""
        return await self.call(lambda e: e.token_requests())

    async def users(self) -> list[str]:
        """See `EasemobEmulator.users`."""
        return await self.call(lambda e: e.users())

    async def message(self, msg_id: str) -> dict[str, Any] | None:
        """See `EasemobEmulator.message`."""
        return await self.call(lambda e: e.message(msg_id))

    async def set_callback(
        self, url: str | None = None, secret: str | None = None, wait: float | None = None
    ) -> None:
        """See `EasemobEmulator.set_callback`."""
        await self.call(lambda e: e.set_callback(url, secret, wait))

    async def set_rewrite(self, enabled: bool) -> None:
        """See `EasemobEmulator.set_rewrite`."""
        await self.call(lambda e: e.set_rewrite(enabled))

    async def settle(self) -> None:
        """See `EasemobEmulator.settle`."""
        await self.call(lambda e: e.settle())
