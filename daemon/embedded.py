"""The built-in DingTalk emulator `channeld run` uses when no real tenant is configured."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from channels.dingtalk.config import DingTalkChannelConfig
from channels.dingtalk.emulator import EmulatorThread

DEMO_CHANNEL_ID = "dingtalk-demo"
DEMO_CLIENT_ID = "ding-demo"
DEMO_CLIENT_SECRET = "demo-secret"  # noqa: S105  (the emulator's own, well-known demo credential)
DEMO_TEMPLATE = "tpl.ai.schema"


class EmbeddedEmulator:
    """Runs on its own thread and loop, so the daemon talks to it over real sockets."""

    def __init__(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self._thread = EmulatorThread(
            [(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)],
            host=host.strip("[]"),
            port=int(port),
            templates=[DEMO_TEMPLATE],
            ping_interval=30.0,
        )

    @property
    def url(self) -> str:
        return self._thread.url

    async def start(self) -> None:
        await asyncio.to_thread(self._thread.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self._thread.stop)

    def demo_channel(self) -> DingTalkChannelConfig:
        """A channel pointed at the emulator, answering with AI cards."""
        return DingTalkChannelConfig(
            id=DEMO_CHANNEL_ID,
            client_id=DEMO_CLIENT_ID,
            client_secret=SecretStr(DEMO_CLIENT_SECRET),
            card_template_id=DEMO_TEMPLATE,
            api_base=self.url,
        )

    def chat_hint(self) -> str:
        return f"channeld chat --emulator {self.url} --app {DEMO_CLIENT_ID}"
