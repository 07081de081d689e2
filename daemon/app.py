"""The daemon: storage, agents, channels and the admin listener, started and stopped in order."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal

from agents.base import Agent
from agents.registry import build_agents, close_agents
from channels.config import ChannelConfigBase
from channels.dingtalk.config import DingTalkChannelConfig
from channels.dingtalk.provider import DingTalkProvider
from channels.errors import ConfigError
from channels.manager import AgentProfile, ChannelManager
from channels.observer import Observer
from channels.provider import ChannelProvider, InboundSink
from channels.supervisor import Backoff
from daemon.admin import AdminServer
from daemon.api import AdminApi
from daemon.channel_service import ChannelService, decode_record
from daemon.config import Settings
from daemon.embedded import EmbeddedEmulator
from daemon.metrics import EventLoopLagMonitor, Metrics, metrics_handler
from daemon.secrets import SecretBox, load_key
from storage.repository import Store

log = logging.getLogger("channeld")

STARTUP_CONNECT_GRACE = 10.0  # seconds to wait for channels before reporting "started"


def build_provider(
    config: ChannelConfigBase, sink: InboundSink, observer: Observer
) -> ChannelProvider:
    """One provider class per channel `type`."""
    if isinstance(config, DingTalkChannelConfig):
        return DingTalkProvider(config, sink, observer=observer)
    raise ConfigError(f"channel type {getattr(config, 'type', '?')!r} is not supported")


class Daemon:
    """Owns every long-lived resource; `start()` then `stop()`, each once."""

    def __init__(self, settings: Settings, *, backoff: Backoff | None = None) -> None:
        self.settings = settings
        self._backoff = backoff
        self.store: Store | None = None
        self.manager: ChannelManager | None = None
        self.admin: AdminServer | None = None
        self.emulator: EmbeddedEmulator | None = None
        self.channels: ChannelService | None = None
        self.metrics = Metrics()
        self._lag_monitor = EventLoopLagMonitor(self.metrics)
        self._agents: dict[str, Agent] = {}

    async def _ready(self) -> bool:
        return (
            self.store is not None
            and self.manager is not None
            and self.manager.started
            and await self.store.ping()
        )

    async def start(self) -> None:
        settings = self.settings
        settings.daemon.state_dir.mkdir(parents=True, exist_ok=True)
        channels: list[ChannelConfigBase] = list(settings.channels)
        if settings.emulator.enabled:
            self.emulator = EmbeddedEmulator(settings.emulator.listen)
            await self.emulator.start()
            if not any(isinstance(c, DingTalkChannelConfig) for c in channels):
                channels.append(self.emulator.demo_channel())
        self.store = await Store.open(settings.daemon.effective_database_url)
        self._agents = build_agents(settings.agents, on_usage=self.metrics.llm_tokens)
        profiles = {
            name: AgentProfile(
                agent=self._agents[name],
                system_prompt=config.system_prompt,
                history_messages=config.history_messages,
            )
            for name, config in settings.agents.items()
        }
        box = SecretBox(load_key(settings.daemon.state_dir, settings.daemon.secret_key_file))
        self.manager = ChannelManager(
            self.store,
            build_provider=build_provider,
            agents=profiles,
            decode=functools.partial(decode_record, box),
            backoff=self._backoff,
            observer=self.metrics,
        )
        self.channels = ChannelService(
            self.store,
            self.manager,
            box,
            set(settings.agents),
            on_deleted=self.metrics.remove_channel,
        )
        agents_view = [{"name": n, "type": c.type} for n, c in settings.agents.items()]
        self.admin = AdminServer(
            settings.admin,
            self._ready,
            api=AdminApi(self.channels, self.store, agents_view),
            metrics=metrics_handler(self.metrics),
        )
        self._lag_monitor.start()
        await self.admin.start()
        await self.manager.start(channels)
        log.info(
            "channeld started: %d channel(s), admin on http://%s:%s",
            len(channels),
            settings.admin.host,
            self.admin.port,
        )
        if self.emulator is not None:
            log.info(
                "emulated DingTalk at %s; talk to the bot with: %s",
                self.emulator.url,
                self.emulator.chat_hint(),
            )

    async def stop(self) -> None:
        """Reverse order of start; each step bounded by its own budget."""
        if self.admin is not None:
            await self.admin.stop()
        await self._lag_monitor.stop()
        if self.manager is not None:
            await self.manager.close()
        await close_agents(self._agents)
        if self.store is not None:
            await self.store.close()
        if self.emulator is not None:
            await self.emulator.stop()
        log.info("channeld stopped")


async def run(settings: Settings, *, install_signals: bool = True) -> int:
    """Run until SIGTERM/SIGINT; a second SIGINT forces the exit."""
    daemon = Daemon(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_signal(signum: signal.Signals) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1 and signum == signal.SIGINT:
            log.warning("second interrupt: exiting now")
            raise SystemExit(130)
        log.info("received %s, shutting down", signum.name)
        stop.set()

    handlers: list[signal.Signals] = []
    if install_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
            handlers.append(signum)
    try:
        await daemon.start()
        await stop.wait()
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
        await daemon.stop()
    return 0
