"""Runs a voice emulator on its own event loop in a background thread.

The test's loop then runs the daemon (or a loopback LLM endpoint) alone: the agent's requests
and the callbacks reach it over real loopback HTTP, and the official Alibaba SDK's calls are
answered by another loop than the one that awaits them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from channels.emulator import thread
from channels.voice.emulator.callbacks import CallbackAttempt
from channels.voice.emulator.llm import LlmRequest
from channels.voice.emulator.providers import PROVIDERS
from channels.voice.emulator.server import VoiceEmulator


class VoiceEmulatorThread(thread.EmulatorThread[VoiceEmulator]):
    """A started voice cloud (`provider`: zego or aliyun) on a private loop, with awaitable
    thread-safe access mirroring the control plane."""

    def __init__(
        self, provider: str = "zego", agents: Iterable[Any] | None = None, **options: Any
    ) -> None:
        factory = PROVIDERS[provider]
        chosen = factory.default_agents if agents is None else agents
        super().__init__(factory, chosen, name=f"voice-{provider}-emulator", **options)
        self.provider = provider

    async def say(self, text: str, **kwargs: Any) -> dict[str, Any]:
        """See `VoiceEmulator.say`."""
        return await self.call(lambda e: e.say(text, **kwargs))

    async def repeat(self, instance_id: str | None = None) -> dict[str, Any]:
        """See `VoiceEmulator.repeat`."""
        return await self.call(lambda e: e.repeat(instance_id))

    async def interrupt(self, played_chars: int, instance_id: str | None = None) -> dict[str, Any]:
        """See `VoiceEmulator.interrupt`."""
        return await self.call(lambda e: e.interrupt(played_chars, instance_id=instance_id))

    async def hangup(self, instance_id: str | None = None) -> dict[str, Any]:
        """See `VoiceEmulator.hangup`."""
        return await self.call(lambda e: e.hangup(instance_id))

    async def set_console(self, **settings: Any) -> dict[str, Any]:
        """See `VoiceEmulator.set_console`."""
        return await self.call(lambda e: e.set_console(**settings))

    async def instances(self) -> list[dict[str, Any]]:
        """See `VoiceEmulator.instances`."""
        return await self.call(lambda e: e.instances())

    async def llm_requests(self, instance_id: str | None = None) -> list[LlmRequest]:
        """See `VoiceEmulator.llm_requests`."""
        return await self.call(lambda e: e.llm_requests(instance_id))

    async def callback_attempts(
        self, event: str | None = None, instance_id: str | None = None
    ) -> list[CallbackAttempt]:
        """See `VoiceEmulator.callback_attempts`."""
        return await self.call(lambda e: e.callback_attempts(event, instance_id))
