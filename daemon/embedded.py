"""The built-in emulator `channeld run` uses when no real tenant is configured.

Which platform it emulates, and the demo channel pointed at it, come from the registry.
"""

from __future__ import annotations

import asyncio

from channels import registry
from channels.config import ChannelConfigBase


class EmbeddedEmulator:
    """Runs on its own thread and loop, so the daemon talks to it over real sockets."""

    def __init__(self, listen: str) -> None:
        platform, self._demo = registry.demo()
        self.platform = platform.name
        self.title = platform.title
        host, _, port = listen.rpartition(":")
        self._thread = self._demo.emulator(host.strip("[]"), int(port))

    @property
    def url(self) -> str:
        return self._thread.url

    async def start(self) -> None:
        await asyncio.to_thread(self._thread.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self._thread.stop)

    def demo_channel(self) -> ChannelConfigBase:
        """A channel pointed at the emulator."""
        return self._demo.channel(self.url)

    def chat_hint(self) -> str:
        return f"channeld chat --emulator {self.url} --app {self._demo.app}"
