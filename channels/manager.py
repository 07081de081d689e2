"""The channel manager: reconciles desired state (storage) with running supervisors."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pydantic import SecretStr

from channels.config import ChannelConfigBase
from channels.conversations import AnswerSlots
from channels.handler import MessageHandler
from channels.live import AgentProfile, ChannelRuntime, LiveChannel, ProviderBuilder
from channels.model import ChannelState
from channels.observer import NullObserver, Observer
from channels.supervisor import ChannelStatus, Supervisor
from channels.users.resolver import UserResolver
from channels.voice.config import VoiceConfig
from common.backoff import Backoff
from common.errors import ConfigError
from common.redact import scrub
from storage.repository import ChannelRecord, Store

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 200  # of a platform's error text in the status the API shows
# Seconds an answer that began before its channel stopped may go on through the old HTTP client
# (the daemon passes its graceful_timeout); then it is cut short, as at a shutdown.
STOP_GRACE = 30.0
CUT_SHORT_BUDGET = 10.0  # seconds cut-short answers get to end their cards and rows


# ends the voice calls of a channel that no longer offers them, given the settings it had
VoiceGone = Callable[[str, VoiceConfig], Awaitable[object]]


def _secrets_shown(value: Any) -> Any:
    """A settings dump with every secret as its value, at any depth (`[channels.voice]`)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _secrets_shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_secrets_shown(v) for v in value]
    return value


def _secrets_of(value: Any) -> list[str]:
    """Every secret value in a settings dump, at any depth."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _secrets_of(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _secrets_of(v)]
    return []


def _settings_text(config: ChannelConfigBase) -> bytes:
    plain = _secrets_shown(config.model_dump(mode="python"))
    return json.dumps(plain, sort_keys=True, default=str).encode()


def spec_digest(config: ChannelConfigBase, key: bytes) -> str:
    """Changes whenever any setting, secrets included, changes; keyed (HMAC), so the stored value
    cannot be used to guess the secrets offline."""
    return "hmac-sha256:" + hmac.new(key, _settings_text(config), hashlib.sha256).hexdigest()


def _legacy_digest(config: ChannelConfigBase) -> str:
    # what earlier versions stored: compared once so an upgrade keeps operator toggles, never stored
    return hashlib.sha256(_settings_text(config)).hexdigest()


def public_error(text: str, config: ChannelConfigBase | None) -> str:
    """An error as the API shows it: one line, bounded, the channel's secrets and tokens masked."""
    secrets = _secrets_of(config.model_dump(mode="python")) if config else []
    text = " ".join(scrub(text, secrets).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


class ChannelManager:
    """Starts, stops and restarts only what differs between storage and what runs."""

    def __init__(
        self,
        store: Store,
        *,
        build_provider: ProviderBuilder,
        agents: Mapping[str, AgentProfile],
        answer_slots: AnswerSlots,
        digest_key: bytes,
        decode: Callable[[ChannelRecord], ChannelConfigBase] | None = None,
        backoff: Backoff | None = None,
        observer: Observer | None = None,
        stop_grace: float = STOP_GRACE,
        users: UserResolver | None = None,
    ) -> None:
        self._store = store
        self._stop_grace = stop_grace
        self._digest_key = digest_key
        self._decode = decode
        self._observer = observer or NullObserver()
        self._build_provider = build_provider
        self._agents = agents
        self._backoff = backoff
        self._configs: dict[str, ChannelConfigBase] = {}
        self._running: dict[str, LiveChannel] = {}
        # runtimes of stopped channels, told at the end of a reconcile what replaced them
        self._retired: dict[str, ChannelRuntime] = {}
        self._drains: set[asyncio.Task[None]] = set()  # answers of stopped channels, see _drain
        # ends the voice calls of a channel that stops offering them (deleted, disabled, its
        # voice section or a cloud's edited away); a restart or a shutdown keeps them
        self.voice_gone: VoiceGone | None = None
        self._failed_to_build: dict[str, str] = {}
        self._last_status: dict[str, ChannelStatus] = {}
        self._lock = asyncio.Lock()
        self.handler = MessageHandler(
            store, slots=answer_slots, observer=self._observer, users=users
        )
        self.started = False

    # -- desired state --------------------------------------------------------------------------

    async def provision(self, channels: Sequence[ChannelConfigBase]) -> None:
        """Write the config file's channels as desired state; operator toggles survive restarts."""
        wanted = {c.id: c for c in channels}
        for record in await self._store.list_channels():
            if record.source == "config" and record.id not in wanted:
                await self._store.delete_channel(record.id)
        for config in channels:
            digest = spec_digest(config, self._digest_key)
            existing = await self._store.get_channel(config.id)
            enabled = config.enabled
            if existing is not None and existing.spec.get("digest") in (
                digest,
                _legacy_digest(config),
            ):
                enabled = existing.enabled
            spec: dict[str, Any] = {"settings": config.model_dump(mode="json"), "digest": digest}
            await self._store.upsert_channel(
                config.id,
                type=config.type,
                agent=config.agent,
                enabled=enabled,
                source="config",
                spec=spec,
            )
            self._configs[config.id] = config

    async def start(self, channels: Sequence[ChannelConfigBase] | None = None) -> None:
        """Start every enabled channel, once `channels` (the config file's) are provisioned
        (None: they already are)."""
        if channels is not None:
            await self.provision(channels)
        await self.reconcile()
        self.started = True

    async def reconcile(self) -> None:
        """Make the running supervisors match storage."""
        voice_gone: list[tuple[str, VoiceConfig]] = []
        async with self._lock:
            records = {r.id: r for r in await self._store.list_channels()}
            for channel_id in list(self._running):
                record = records.get(channel_id)
                running = self._running[channel_id]
                if record is None or not record.enabled or record.version != running.version:
                    before = running.runtime.config.voice
                    if before is not None and self._loses_voice(before, record):
                        voice_gone.append((channel_id, before))
                    await self._stop(channel_id, ChannelState.DISABLED)
            for channel_id, record in records.items():
                if record.enabled and channel_id not in self._running:
                    self._start(record)
            self._hand_over()
        for channel_id, voice in voice_gone:
            if self.voice_gone is not None:
                await self.voice_gone(channel_id, voice)

    def _loses_voice(self, before: VoiceConfig, record: ChannelRecord | None) -> bool:
        """Whether the channel stops offering a cloud it offered (the record gone or off, or
        its new settings without it)."""
        if record is None or not record.enabled:
            return True
        try:
            after = self.settings(record)
        except (ConfigError, ValueError):
            return True
        voice = after.voice if after is not None else None
        return voice is None or any(
            getattr(before, cloud) is not None and getattr(voice, cloud) is None
            for cloud in ("zego", "aliyun")
        )

    def _hand_over(self) -> None:
        """Tell each stopped channel's runtime what replaced it: its queued messages follow."""
        for channel_id, retired in self._retired.items():
            successor = self._running.get(channel_id)
            retired.replaced_by(successor.runtime if successor else None)
        self._retired.clear()

    def settings(self, record: ChannelRecord) -> ChannelConfigBase | None:
        """The live settings of a channel: from the config file, or decoded from storage."""
        if record.source == "config":
            return self._configs.get(record.id)
        if self._decode is None:
            return None
        return self._decode(record)

    def _start(self, record: ChannelRecord) -> None:
        try:
            config = self.settings(record)
        except (ConfigError, ValueError) as exc:
            # e.g. a secret the current key cannot open: this channel fails, the others run
            self._failed_to_build[record.id] = public_error(f"{type(exc).__name__}: {exc}", None)
            return
        if config is None:
            self._failed_to_build[record.id] = "no settings for this channel"
            return
        profile = self._agents.get(config.agent)
        if profile is None:
            self._failed_to_build[record.id] = f"unknown agent {config.agent!r}"
            return
        try:
            channel = LiveChannel(
                record.id,
                record.version,
                config,
                profile,
                build_provider=self._build_provider,
                accept=self.handler.accept,
                accept_batch=self.handler.accept_batch,
                observer=self._observer,
                backoff=self._backoff,
            )
        except ConfigError as exc:
            self._failed_to_build[record.id] = public_error(str(exc), config)
            return
        self._failed_to_build.pop(record.id, None)
        self._running[record.id] = channel
        channel.start()

    async def _stop(self, channel_id: str, final_state: ChannelState) -> None:
        running = self._running.pop(channel_id, None)
        if running is not None:
            self._retired[channel_id] = running.runtime
            await running.stop(final_state)
            self._last_status[channel_id] = self._public(running)
            if not await running.runtime.settled(0):
                drain = asyncio.create_task(
                    self._drain(running.runtime), name=f"drain-{channel_id}"
                )
                self._drains.add(drain)
                drain.add_done_callback(self._drains.discard)

    async def _drain(self, runtime: ChannelRuntime) -> None:
        """Answers begun before their channel stopped end through its old HTTP client (closed
        after the last of them), or are cut short after the grace period."""
        if await runtime.settled(self._stop_grace):
            return
        count = self.handler.cut_short(runtime)
        log.warning(
            "channel %s: %d answer(s) still running %.0fs after it stopped; cutting them short",
            runtime.config.id,
            count,
            self._stop_grace,
        )
        if not await runtime.settled(CUT_SHORT_BUDGET):
            log.error("channel %s: answers cut short did not end in time", runtime.config.id)

    # -- admin actions --------------------------------------------------------------------------

    async def set_enabled(self, channel_id: str, enabled: bool) -> bool:
        if await self._store.set_channel_enabled(channel_id, enabled) is None:
            return False
        await self.reconcile()
        return True

    async def restart(self, channel_id: str) -> bool:
        """Close the old connection first, then start a fresh one."""
        record = await self._store.get_channel(channel_id)
        if record is None:
            return False
        async with self._lock:
            await self._stop(channel_id, ChannelState.DISCONNECTED)
        await self.reconcile()
        return True

    # -- queries --------------------------------------------------------------------------------

    def runtime(self, channel_id: str) -> ChannelRuntime | None:
        running = self._running.get(channel_id)
        return running.runtime if running else None

    def live(self, channel_id: str) -> LiveChannel | None:
        """The running channel `channel_id`, if it runs."""
        return self._running.get(channel_id)

    def supervisor(self, channel_id: str) -> Supervisor | None:
        running = self._running.get(channel_id)
        return running.supervisor if running else None

    def _public(self, running: LiveChannel) -> ChannelStatus:
        status = running.supervisor.status()
        if status.last_error is None:
            return status
        return replace(status, last_error=public_error(status.last_error, running.runtime.config))

    def status(self, channel_id: str) -> ChannelStatus:
        running = self._running.get(channel_id)
        if running is not None:
            return self._public(running)
        error = self._failed_to_build.get(channel_id)
        last = self._last_status.get(channel_id)
        return ChannelStatus(
            state=ChannelState.FAILED if error else ChannelState.DISABLED,
            connected_at=None,
            last_event_at=last.last_event_at if last else None,
            last_error=error or (last.last_error if last else None),
            reconnects=last.reconnects if last else 0,
            messages_received=last.messages_received if last else 0,
            next_attempt_at=None,
        )

    def forget(self, channel_id: str) -> None:
        """Drop what is remembered of a deleted channel."""
        self._last_status.pop(channel_id, None)
        self._failed_to_build.pop(channel_id, None)

    def states(self) -> dict[str, ChannelState]:
        return {cid: r.supervisor.state for cid, r in self._running.items()}

    async def close(self, graceful: float = 0.0) -> None:
        """Stop intake, drain answers for up to `graceful` s, then close every channel."""
        if graceful > 0 and not await self.handler.drain(graceful):
            log.warning("answers still running after %.0fs; cutting them short", graceful)
        await self.handler.close()
        async with self._lock:
            ids = list(self._running)
            await asyncio.gather(*(self._stop(cid, ChannelState.DISABLED) for cid in ids))
            self._hand_over()
        # every answer ended with the handler: what drained a stopped channel ends now too
        drains = list(self._drains)
        for drain in drains:
            drain.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
