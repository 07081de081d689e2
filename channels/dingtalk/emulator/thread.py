"""Runs a `DingTalkEmulator` on its own event loop in a background thread.

The 0.24.3 SDK makes blocking `requests` calls from inside its coroutines; an emulator served by
the same loop would never answer them (docs/platforms/dingtalk.md §4.3). `channels.emulator.thread`
holds the generic machinery; this module adds DingTalk's awaitable proxies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from channels.dingtalk.emulator.gateway import ConnectionInfo
from channels.dingtalk.emulator.payloads import UserMessage
from channels.dingtalk.emulator.server import DEFAULT_APPS, DingTalkEmulator
from channels.dingtalk.emulator.state import AckRecord, AppSpec, CallRecord, CardState, Fault
from channels.emulator import thread as emulator_thread


class EmulatorThread(emulator_thread.EmulatorThread[DingTalkEmulator]):
    """A started DingTalk emulator on a private loop, with awaitable thread-safe access."""

    def __init__(
        self,
        apps: Iterable[AppSpec] = DEFAULT_APPS,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **options: Any,
    ) -> None:
        app_list = list(apps)
        super().__init__(
            lambda: DingTalkEmulator(app_list, **options),
            host=host,
            port=port,
            name="dingtalk-emulator",
        )

    # -- the most used emulator methods, as awaitable proxies ------------------------------------

    async def send_user_message(self, client_id: str, **kwargs: Any) -> UserMessage:
        """See `DingTalkEmulator.send_user_message`."""
        return await self.call(lambda e: e.send_user_message(client_id, **kwargs))

    async def chat_view(self, conversation_id: str) -> dict[str, Any] | None:
        """See `DingTalkEmulator.chat_view`."""
        return await self.call(lambda e: e.chat_view(conversation_id))

    async def card(self, out_track_id: str) -> CardState | None:
        """See `DingTalkEmulator.card`."""
        return await self.call(lambda e: e.card(out_track_id))

    async def calls(self, path: str | None = None, method: str | None = None) -> list[CallRecord]:
        """See `DingTalkEmulator.calls`."""
        return await self.call(lambda e: e.calls(path, method))

    async def acks(self, message_id: str | None = None) -> list[AckRecord]:
        """See `DingTalkEmulator.acks`."""
        return await self.call(lambda e: e.acks(message_id))

    async def live_connections(self, client_id: str | None = None) -> list[ConnectionInfo]:
        """See `DingTalkEmulator.live_connections`."""
        return await self.call(lambda e: e.live_connections(client_id))

    async def add_fault(self, path_pattern: str, status: int | None = None, **kwargs: Any) -> Fault:
        """See `DingTalkEmulator.add_fault`."""
        return await self.call(lambda e: e.add_fault(path_pattern, status, **kwargs))

    async def drop(self, client_id: str, **kwargs: Any) -> int:
        """See `DingTalkEmulator.drop`."""
        return await self.call(lambda e: e.drop(client_id, **kwargs))

    async def system_disconnect(self, client_id: str, **kwargs: Any) -> int:
        """See `DingTalkEmulator.system_disconnect`."""
        return await self.call(lambda e: e.system_disconnect(client_id, **kwargs))

    async def silence(self, client_id: str, on: bool = True) -> int:
        """See `DingTalkEmulator.silence`."""
        return await self.call(lambda e: e.silence(client_id, on))

    async def expire_tokens(self) -> int:
        """See `DingTalkEmulator.expire_tokens`."""
        return await self.call(lambda e: e.expire_tokens())

    async def expire_sessions(self) -> int:
        """See `DingTalkEmulator.expire_sessions`."""
        return await self.call(lambda e: e.expire_sessions())


def run_in_thread(apps: Iterable[AppSpec] = DEFAULT_APPS, **kwargs: Any) -> EmulatorThread:
    """Starts an emulator thread (blocking until it serves); `stop()` it when done."""
    return EmulatorThread(apps, **kwargs).start()
