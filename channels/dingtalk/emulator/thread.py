"""Runs a `DingTalkEmulator` on its own event loop in a background thread.

The 0.24.3 SDK makes blocking `requests` calls from inside its coroutines; an emulator served by
the same loop would never answer them (docs/platforms/dingtalk.md §4.3). `channels.emulator.thread`
holds the generic machinery and the proxies every platform shares; this module adds DingTalk's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from channels.dingtalk.emulator.server import DEFAULT_APPS, DingTalkEmulator
from channels.dingtalk.emulator.state import AppSpec, EmulatedUser
from channels.emulator import thread


class EmulatorThread(thread.EmulatorThread[DingTalkEmulator]):
    """A started DingTalk emulator on a private loop, with awaitable thread-safe access."""

    def __init__(self, apps: Iterable[AppSpec] = DEFAULT_APPS, **options: Any) -> None:
        super().__init__(DingTalkEmulator, apps, name="dingtalk-emulator", **options)

    async def system_disconnect(self, client_id: str, **kwargs: Any) -> int:
        """See `DingTalkEmulator.system_disconnect`."""
        return await self.call(lambda e: e.system_disconnect(client_id, **kwargs))

    async def expire_sessions(self) -> int:
        """See `DingTalkEmulator.expire_sessions`."""
        return await self.call(lambda e: e.expire_sessions())

    async def add_user(self, user: EmulatedUser) -> None:
        """See `DingTalkEmulator.add_user`."""
        await self.call(lambda e: e.add_user(user))

    async def set_profile_access(self, access: str) -> None:
        """See `DingTalkEmulator.set_profile_access`."""
        await self.call(lambda e: e.set_profile_access(access))
