"""Runs a `FeishuEmulator` on its own event loop in a background thread.

lark-oapi 1.7.5 discovers its endpoint with a blocking `requests.post` from inside its loop
(docs/platforms/feishu.md §1.1); an emulator served by the caller's loop would never answer it.
The generic machinery is `channels.emulator.thread`; this module adds Feishu's awaitable proxies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from channels.emulator import thread as emulator_thread
from channels.feishu.emulator.events import Delivery
from channels.feishu.emulator.gateway import ConnectionInfo
from channels.feishu.emulator.payloads import UserMessage
from channels.feishu.emulator.server import DEFAULT_APPS, FeishuEmulator
from channels.feishu.emulator.state import AckRecord, AppSpec, CallRecord, CardState, Fault


class FeishuEmulatorThread(emulator_thread.EmulatorThread[FeishuEmulator]):
    """A started Feishu emulator on a private loop, with awaitable thread-safe access."""

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
            lambda: FeishuEmulator(app_list, **options),
            host=host,
            port=port,
            name="feishu-emulator",
        )

    # -- the most used emulator methods, as awaitable proxies ------------------------------------

    async def send_user_message(self, app_id: str, **kwargs: Any) -> UserMessage:
        """See `FeishuEmulator.send_user_message`."""
        return await self.call(lambda e: e.send_user_message(app_id, **kwargs))

    async def push_event(self, app_id: str, payload: dict[str, Any], **kwargs: Any) -> Delivery:
        """See `FeishuEmulator.push_event`."""
        return await self.call(lambda e: e.push_event(app_id, payload, **kwargs))

    async def redeliver(self, message_id: str, new_event_id: bool = True) -> Delivery:
        """See `FeishuEmulator.redeliver`."""
        return await self.call(lambda e: e.redeliver(message_id, new_event_id))

    async def chat_view(self, chat_id: str) -> dict[str, Any] | None:
        """See `FeishuEmulator.chat_view`."""
        return await self.call(lambda e: e.chat_view(chat_id))

    async def card(self, card_id: str) -> CardState | None:
        """See `FeishuEmulator.card`."""
        return await self.call(lambda e: e.card(card_id))

    async def cards(self) -> list[CardState]:
        """See `FeishuEmulator.cards`."""
        return await self.call(lambda e: e.cards())

    async def calls(self, path: str | None = None, method: str | None = None) -> list[CallRecord]:
        """See `FeishuEmulator.calls`."""
        return await self.call(lambda e: e.calls(path, method))

    async def acks(self, frame_message_id: str | None = None) -> list[AckRecord]:
        """See `FeishuEmulator.acks`."""
        return await self.call(lambda e: e.acks(frame_message_id))

    async def deliveries(self, message_id: str | None = None) -> list[Delivery]:
        """See `FeishuEmulator.deliveries`."""
        return await self.call(lambda e: e.deliveries(message_id))

    async def connections(self, app_id: str | None = None) -> list[ConnectionInfo]:
        """See `FeishuEmulator.connections`."""
        return await self.call(lambda e: e.connections(app_id))

    async def live_connections(self, app_id: str | None = None) -> list[ConnectionInfo]:
        """See `FeishuEmulator.live_connections`."""
        return await self.call(lambda e: e.live_connections(app_id))

    async def discoveries(self, app_id: str | None = None) -> list[CallRecord]:
        """See `FeishuEmulator.discoveries`."""
        return await self.call(lambda e: e.discoveries(app_id))

    async def add_fault(self, path_pattern: str, status: int | None = None, **kwargs: Any) -> Fault:
        """See `FeishuEmulator.add_fault`."""
        return await self.call(lambda e: e.add_fault(path_pattern, status, **kwargs))

    async def clear_faults(self) -> None:
        """See `FeishuEmulator.clear_faults`."""
        await self.call(lambda e: e.clear_faults())

    async def reject_handshakes(
        self, status: int = 514, autherrcode: int = 1000040350, **kwargs: Any
    ) -> None:
        """See `FeishuEmulator.reject_handshakes`."""
        await self.call(lambda e: e.reject_handshakes(status, autherrcode, **kwargs))

    async def set_latency(self, seconds: float) -> None:
        """See `FeishuEmulator.set_latency`."""
        await self.call(lambda e: e.set_latency(seconds))

    async def drop(self, app_id: str | None = None, **kwargs: Any) -> int:
        """See `FeishuEmulator.drop`."""
        return await self.call(lambda e: e.drop(app_id, **kwargs))

    async def silence(self, app_id: str | None = None, on: bool = True, **kwargs: Any) -> int:
        """See `FeishuEmulator.silence`."""
        return await self.call(lambda e: e.silence(app_id, on, **kwargs))

    async def refuse_connections(self, app_id: str | None = None, on: bool = True) -> None:
        """See `FeishuEmulator.refuse_connections`."""
        await self.call(lambda e: e.refuse_connections(app_id, on))

    async def restart_gateway(self, app_id: str | None = None, downtime: float = 1.0) -> int:
        """See `FeishuEmulator.restart_gateway`."""
        return await self.call(lambda e: e.restart_gateway(app_id, downtime))

    async def set_client_config(self, **changes: float) -> dict[str, int | float]:
        """See `FeishuEmulator.set_client_config`."""
        return await self.call(lambda e: e.set_client_config(**changes))

    async def expire_tokens(self) -> int:
        """See `FeishuEmulator.expire_tokens`."""
        return await self.call(lambda e: e.expire_tokens())
