"""Runs a `FeishuEmulator` on its own event loop in a background thread.

lark-oapi 1.7.5 discovers its endpoint with a blocking `requests.post` from inside its loop
(docs/platforms/feishu.md §1.1); an emulator served by the caller's loop would never answer it.
`channels.emulator.thread` holds the generic machinery and the proxies every platform shares;
this module adds Feishu's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from channels.emulator import thread
from channels.feishu.emulator.contact import ContactUser
from channels.feishu.emulator.events import Delivery
from channels.feishu.emulator.server import DEFAULT_APPS, FeishuEmulator
from channels.feishu.emulator.state import AppSpec, CallRecord


class FeishuEmulatorThread(thread.EmulatorThread[FeishuEmulator]):
    """A started Feishu emulator on a private loop, with awaitable thread-safe access."""

    def __init__(self, apps: Iterable[AppSpec] = DEFAULT_APPS, **options: Any) -> None:
        super().__init__(FeishuEmulator, apps, name="feishu-emulator", **options)

    async def push_event(self, app_id: str, payload: dict[str, Any], **kwargs: Any) -> Delivery:
        """See `FeishuEmulator.push_event`."""
        return await self.call(lambda e: e.push_event(app_id, payload, **kwargs))

    async def redeliver(self, message_id: str, new_event_id: bool = True) -> Delivery:
        """See `FeishuEmulator.redeliver`."""
        return await self.call(lambda e: e.redeliver(message_id, new_event_id))

    async def deliveries(self, message_id: str | None = None) -> list[Delivery]:
        """See `FeishuEmulator.deliveries`."""
        return await self.call(lambda e: e.deliveries(message_id))

    async def discoveries(self, app_id: str | None = None) -> list[CallRecord]:
        """See `FeishuEmulator.discoveries`."""
        return await self.call(lambda e: e.discoveries(app_id))

    async def reject_handshakes(
        self, status: int = 514, autherrcode: int = 1000040350, **kwargs: Any
    ) -> None:
        """See `FeishuEmulator.reject_handshakes`."""
        await self.call(lambda e: e.reject_handshakes(status, autherrcode, **kwargs))

    async def refuse_connections(self, app_id: str | None = None, on: bool = True) -> None:
        """See `FeishuEmulator.refuse_connections`."""
        await self.call(lambda e: e.refuse_connections(app_id, on))

    async def restart_gateway(self, app_id: str | None = None, downtime: float = 1.0) -> int:
        """See `FeishuEmulator.restart_gateway`."""
        return await self.call(lambda e: e.restart_gateway(app_id, downtime))

    async def set_client_config(self, **changes: float) -> dict[str, int | float]:
        """See `FeishuEmulator.set_client_config`."""
        return await self.call(lambda e: e.set_client_config(**changes))

    async def deny_contact(self, mode: str | None) -> str:
        """See `Contact.deny`: "scope", "range", "fields", or None (granted)."""
        return await self.call(lambda e: e.contact.deny(mode))

    async def add_contact_user(self, open_id: str, **fields: str) -> ContactUser:
        """See `Contact.add_user`."""
        return await self.call(lambda e: e.contact.add_user(open_id, **fields))
