"""The daemon: storage, agents, channels and the admin listener, started and stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import col

from agents.base import Agent
from agents.faq import FaqMatcher
from agents.registry import build_agents, build_breakers, close_agents
from agents.routes import RouteTable
from channels.config import ChannelConfigBase
from channels.conversations import AnswerSlots
from channels.live import AgentProfile, Routing
from channels.manager import ChannelManager
from channels.model import ChannelState
from channels.recovery import recover
from channels.registry import build_provider  # the provider of each channel's platform
from channels.users.directory import Directory
from channels.users.file import FileDirectory
from channels.users.http import HttpDirectory
from channels.users.ldap import LdapDirectory
from channels.users.resolver import OnMiss, UserResolver
from channels.voice.calls import VoiceCalls
from channels.voice.endpoint import VoiceEndpoint
from channels.voice.streams import CallStreams
from common.backoff import Backoff
from common.errors import ConfigError
from daemon.admin import AdminServer
from daemon.api import AdminApi
from daemon.channel_service import (
    ChannelService,
    decode_record,
    sealed_channels,
    takes_callbacks,
)
from daemon.config import ConfigurationError, Settings, UsersSection, load
from daemon.embedded import EmbeddedEmulator
from daemon.metrics import EventLoopLagMonitor, Metrics, metrics_handler
from daemon.retention import Pruner
from daemon.sdnotify import Notifier, WatchdogPinger, watchdog_interval
from daemon.secrets import SecretBox, load_key
from daemon.webhooks import CallbackListener
from storage.engine import private_directory
from storage.models import UserAccount
from storage.repository import Store

log = logging.getLogger("channeld")


def _utc_now() -> datetime:
    return datetime.now(UTC)


STARTUP_CONNECT_GRACE = 10.0  # seconds to wait for channels before reporting "started"


async def blocked_user_ids(store: Store) -> set[str]:
    """The ids of the blocked users: one indexed read, a few rows."""
    # belongs beside the other user operations in storage/users.py (UserRepository)
    statement = sa.select(col(UserAccount.id)).where(col(UserAccount.blocked).is_(True))
    async with store.engine.connect() as connection:
        return set((await connection.execute(statement)).scalars())


def build_directory(users: UsersSection) -> Directory | None:
    """The directory `[users] mapper` names (None for "auto"); a bad one is a config error."""
    try:
        if users.mapper == "file" and users.users_file is not None:
            return FileDirectory(users.users_file)
        if users.mapper == "http":
            return HttpDirectory(users.http_url, users.http_timeout, users.http_retries)
        if users.mapper == "ldap":
            password = users.ldap_bind_password
            return LdapDirectory(
                users.ldap_url,
                bind_dn=users.ldap_bind_dn,
                bind_password=password.get_secret_value() if password is not None else "",
                base_dn=users.ldap_base_dn,
                filter=users.ldap_filter,
                groups_attribute=users.ldap_groups_attribute,
                timeout=users.ldap_timeout,
                ca_file=str(users.ldap_ca_file) if users.ldap_ca_file is not None else None,
            )
    except ConfigError as exc:
        raise ConfigurationError(f"users: {exc}") from None
    return None


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
        self.webhooks: CallbackListener | None = None
        self.voice_calls: VoiceCalls | None = None
        self.directory: Directory | None = None
        self.users: UserResolver | None = None
        self.notifier = Notifier()
        self._ready_task: asyncio.Task[None] | None = None
        self._watchdog = WatchdogPinger(self.notifier, watchdog_interval())
        self.metrics = Metrics()
        self._lag_monitor = EventLoopLagMonitor(self.metrics)
        # one cap on answers in progress for the whole daemon, handed to the handler
        slots = self.answer_slots = AnswerSlots(settings.daemon.max_concurrent_answers)
        self.metrics.watch_answers(lambda: slots.running, lambda: slots.waiting)
        self._pruner: Pruner | None = None
        self._agents: dict[str, Agent] = {}
        # one matcher for every channel, its table replaced on reload
        self._faq = FaqMatcher(settings.faq, threshold=settings.faq_threshold)
        self._routes = RouteTable(settings.routes)  # likewise shared, replaced on reload

    async def _ready(self) -> bool:
        return (
            self.store is not None
            and self.manager is not None
            and self.manager.started
            and await self.store.ping()
        )

    async def start(self) -> None:
        settings = self.settings
        self._watchdog.start()  # first: a slow start is still pinged from the loop
        self.notifier.status("starting")
        await asyncio.to_thread(private_directory, settings.daemon.state_dir)
        if settings.emulator.enabled:
            self.emulator = EmbeddedEmulator(settings.emulator.listen)
            await self.emulator.start()
        channels = self._channels(settings)
        self.store = await Store.open(settings.daemon.effective_database_url)
        # the users file is read here, off the loop; a bad one stops the start (exit 11)
        self.directory = await asyncio.to_thread(build_directory, settings.users)
        self.users = UserResolver(
            self.store,
            self.directory,
            on_miss=OnMiss(settings.users.on_miss),
            cache_seconds=settings.users.cache_seconds,
            email_domain=settings.users.default_email_domain,
            clock=_utc_now,
            observer=self.metrics,
            blocked_users=functools.partial(blocked_user_ids, self.store),
            refused_text=settings.users.refused_text,
            blocked_text=settings.users.blocked_text,
            enrich=settings.users.enrich,
        )
        await self.users.start()
        # one breaker per agent: a dead model is skipped for its cooldown, its fallback answers
        breakers = build_breakers(settings.agents, observer=self.metrics.agent_circuit)
        self._agents = build_agents(
            settings.agents, on_usage=self.metrics.llm_tokens, breakers=breakers
        )
        unrouted = {
            name: AgentProfile(
                agent=self._agents[name],
                system_prompt=config.system_prompt,
                history_messages=config.history_messages,
                faq=self._faq,
            )
            for name, config in settings.agents.items()
        }
        routing = Routing(self._routes, unrouted)
        profiles = {
            name: dataclasses.replace(profile, routing=routing)
            for name, profile in unrouted.items()
        }
        # never a fresh key over sealed secrets: SecretKeyError is a config error (exit 11)
        sealed = sealed_channels(await self.store.list_channels())
        box = SecretBox(
            load_key(settings.daemon.state_dir, settings.daemon.secret_key_file, sealed=sealed)
        )
        self.manager = ChannelManager(
            self.store,
            build_provider=build_provider,
            agents=profiles,
            answer_slots=self.answer_slots,
            digest_key=box.derive("spec-digest"),
            decode=functools.partial(decode_record, box),
            backoff=self._backoff,
            observer=self.metrics,
            stop_grace=settings.daemon.graceful_timeout,
            users=self.users,
        )
        self.webhooks = CallbackListener(settings.webhooks, self.manager.live, self.metrics)
        # Alibaba's UserData is signed with this: only channeld can name a call in it
        voice_key = box.derive("voice-user-data")
        voice_streams = CallStreams()  # the endpoint streams into it, ending a call cuts it
        self.voice_calls = VoiceCalls(
            self.store,
            self.manager.runtime,
            user_data_key=voice_key,
            clock=_utc_now,
            on_active=self.metrics.voice_calls_active,
            streams=voice_streams,
            users=self.users,
        )
        self.manager.voice_gone = self.voice_calls.end_channel
        self.webhooks.serve_voice(
            VoiceEndpoint(
                self.store,
                self.manager.runtime,
                slots=self.answer_slots,
                observer=self.metrics,
                user_data_key=voice_key,
                clock=_utc_now,
                streams=voice_streams,
                heard=self.voice_calls.heard,
            ),
            self.voice_calls,
        )
        self.channels = ChannelService(
            self.store,
            self.manager,
            box,
            set(settings.agents),
            on_deleted=self.metrics.remove_channel,
            callbacks=self.webhooks,
        )
        agents_view = [{"name": n, "type": c.type} for n, c in settings.agents.items()]
        self.admin = AdminServer(
            settings.admin,
            self._ready,
            state_dir=settings.daemon.state_dir,
            api=AdminApi(
                self.channels,
                self.store,
                agents_view,
                self.voice_calls,
                users=self.users,
                circuits=breakers,
            ),
            metrics=metrics_handler(self.metrics),
        )
        self._lag_monitor.start()
        await self.admin.start()
        # what a crash left, read before any channel starts: a message received from then on is
        # a live worker's, and recovery taking it too would answer it twice
        unfinished = await self.store.journal_unfinished()
        await self.manager.provision(channels)
        await self._serve_callbacks()  # the route is live before a webhook channel connects
        await self.manager.start()
        await self.voice_calls.start()
        await recover(
            self.store,
            self.manager.handler,
            self.manager.runtime,
            unfinished,
            freshness=timedelta(minutes=settings.daemon.recovery_window_minutes),
            now=datetime.now(UTC),
        )
        self._pruner = Pruner(
            self.store,
            journal_days=settings.daemon.retention_days,
            conversation_days=settings.daemon.conversation_retention_days,
            on_pruned=self.metrics.rows_pruned,
        )
        self._pruner.start()
        # READY=1 waits for channels to settle, but nothing else waits for it
        self._ready_task = asyncio.create_task(self._report_ready(), name="sd-ready")
        log.info(
            "channeld started: %d channel(s), admin on http://%s:%s",
            len(channels),
            settings.admin.host,
            self.admin.port,
        )
        if self.emulator is not None:
            log.info(
                "emulated %s at %s; talk to the bot with: %s",
                self.emulator.title,
                self.emulator.url,
                self.emulator.chat_hint(),
            )

    async def _serve_callbacks(self) -> None:
        """Open the callback listener once a channel of a webhook platform exists."""
        if self.store is None or self.webhooks is None or self.webhooks.running:
            return
        if any(
            takes_callbacks(record.type) or record.spec.get("settings", {}).get("voice")
            for record in await self.store.list_channels()
        ):
            await self.webhooks.start()

    def _channels(self, settings: Settings) -> list[ChannelConfigBase]:
        """The file's channels, plus the emulator's demo channel when none on its platform is."""
        channels: list[ChannelConfigBase] = list(settings.channels)
        emulator = self.emulator
        if emulator is not None and not any(c.type == emulator.platform for c in channels):
            channels.append(emulator.demo_channel())
        return channels

    async def reload(self, settings: Settings) -> None:
        """Apply a new config file's channels; unchanged channels keep their connections."""
        if self.manager is None:
            return
        if settings.agents != self.settings.agents:
            log.warning("agent changes take effect at the next restart, not on reload")
        if settings.users != self.settings.users:
            log.warning(
                "[users] changes take effect at the next restart; the users file is re-read"
            )
        await self._reload_users()
        self._faq.replace(settings.faq, threshold=settings.faq_threshold)
        routes = settings.routes
        if unknown := sorted({r.agent for r in routes} - set(self._agents)):
            # agents change only at a restart: a route to one not running yet waits for it
            log.error(
                "routes not reloaded, keeping the previous ones: agent(s) %s not running"
                " until the next restart",
                ", ".join(unknown),
            )
            routes = self.settings.routes
        self._routes.replace(routes)
        self.settings = self.settings.model_copy(
            update={
                "channels": settings.channels,
                "faq": settings.faq,
                "faq_threshold": settings.faq_threshold,
                "routes": routes,
            }
        )
        await self.manager.provision(self._channels(settings))
        await self._serve_callbacks()
        await self.manager.reconcile()
        log.info("configuration reloaded: %s", self.channel_summary())
        self.notifier.status(self.channel_summary())

    async def _reload_users(self) -> None:
        """SIGHUP: the users file read again; a bad one leaves the previous one answering."""
        if not isinstance(self.directory, FileDirectory) or self.users is None:
            return
        try:
            await asyncio.to_thread(self.directory.reload)
        except ConfigError as exc:
            log.error("users file not reloaded, keeping the previous one: %s", exc)
            return
        self.users.forget()  # who is who may have changed: everyone is asked again

    def channel_summary(self) -> str:
        states = list(self.manager.states().values()) if self.manager else []
        connected = sum(s is ChannelState.CONNECTED for s in states)
        failed = sum(s is ChannelState.FAILED for s in states)
        return f"{connected} of {len(states)} channels connected, {failed} failed"

    async def _report_ready(self) -> None:
        """READY=1 once every channel settled, or at the deadline with what there is."""
        if self.manager is None:
            return
        settled = {ChannelState.CONNECTED, ChannelState.FAILED}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STARTUP_CONNECT_GRACE):
                # polled: settling is "every channel in one of two states", not one event
                while not all(s in settled for s in self.manager.states().values()):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        self.notifier.ready(self.channel_summary())

    async def stop(self) -> None:
        """Reverse order of start; each step bounded by its own budget."""
        if self.admin is not None:
            await self.admin.stop()
        if self.webhooks is not None:
            await self.webhooks.stop()  # no more callbacks: the platforms keep what they have
        if self.voice_calls is not None:
            await self.voice_calls.stop()
        await self._lag_monitor.stop()
        if self._pruner is not None:
            await self._pruner.stop()
        if self.manager is not None:
            await self.manager.close(self.settings.daemon.graceful_timeout)
        await close_agents(self._agents)
        if self.users is not None:
            await self.users.stop()  # after the handler: no answer resolves anyone any more
        if self.store is not None:
            await self.store.close()
        if self.emulator is not None:
            await self.emulator.stop()
        if self._ready_task is not None:
            self._ready_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ready_task
        await self._watchdog.stop()
        self.notifier.close()
        log.info("channeld stopped")


async def reload(daemon: Daemon, config_path: Path | None) -> None:
    """SIGHUP: read the config again; only channels whose settings changed are restarted."""
    try:
        settings = load(config_path)
    except ConfigurationError as exc:
        log.error("reload refused, keeping the running configuration: %s", exc)
        return
    await daemon.reload(settings)


async def run(
    settings: Settings, *, config_path: Path | None = None, install_signals: bool = True
) -> int:
    """Run until SIGTERM/SIGINT; a second SIGINT forces the exit; SIGHUP reloads channels."""
    daemon = Daemon(settings)
    reloads: set[asyncio.Task[None]] = set()

    def on_hangup() -> None:
        if reloads:
            log.info("a reload is already running")
            return
        task = asyncio.create_task(reload(daemon, config_path), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

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
        daemon.notifier.stopping(daemon.channel_summary())
        stop.set()

    handlers: list[signal.Signals] = []
    if install_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
            handlers.append(signum)
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        handlers.append(signal.SIGHUP)
    try:
        await daemon.start()
        # Everything alive now (modules, config, clients) lives as long as the process: moved out
        # of the collector's sight, full collections stay short (docs/bench: 31-154 ms before).
        gc.freeze()
        await stop.wait()
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
        for task in list(reloads):
            task.cancel()
        await asyncio.gather(*reloads, return_exceptions=True)
        await daemon.stop()
    return 0
